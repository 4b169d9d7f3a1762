"""Minimal in-process post-render hook: enhance a gsplat-style render loop in the same process.

    python examples/post_render_hook.py                 # tiny model, random weights, CPU
    python examples/post_render_hook.py --device cuda --config cosmos-0.6b --weights diffusion_harmonizer.pkl

The "renderer" here is a stand-in returning what gsplat's ``rasterization(..., render_mode="RGB+D")``
returns: ``(render_colors [C, H, W, 4], render_alphas [C, H, W, 1], meta)``. Replace
``fake_rasterization`` by your real call; the hook and adapter stay the same.
"""

from __future__ import annotations

import argparse
import time

import torch

from simharmon.hooks import GsplatAdapter, PostRenderHook
from simharmon.models.enhancer import build_enhancer


def fake_rasterization(step: int, cameras: int, height: int, width: int, device: str):
    """Synthetic stand-in for gsplat: moving colour gradients, a depth ramp, full alpha."""
    ys = torch.linspace(0, 1, height, device=device).view(1, height, 1)
    xs = torch.linspace(0, 1, width, device=device).view(1, 1, width)
    cams = torch.arange(cameras, device=device, dtype=torch.float32).view(cameras, 1, 1)
    phase = 0.05 * step + 0.3 * cams
    shape = (cameras, height, width)
    rgb = torch.stack([((xs + phase) % 1.0).expand(shape), ys.expand(shape),
                       ((xs * ys + phase) % 1.0).expand(shape)], dim=-1)  # [C, H, W, 3]
    depth = (5.0 + 20.0 * ys).expand(cameras, height, width).unsqueeze(-1)
    colors = torch.cat([rgb, depth], dim=-1).contiguous()  # [C, H, W, 4]: RGB + depth last
    alphas = torch.ones(cameras, height, width, 1, device=device)
    return colors, alphas, {"step": step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--weights", action="append", default=[])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--size", default="64x48", help="WxH, multiples of 16")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    model = build_enhancer(args.config, args.weights or None, device=args.device)
    if not model.weights:
        print("note: random (untrained) weights -- this shows the plumbing, not meaningful enhancement")
    hook = PostRenderHook(model, GsplatAdapter("RGB+D"), stream="gsplat")
    render = hook.wrap(fake_rasterization)  # same signature, enhanced output

    for step in range(args.frames):
        start = time.perf_counter()
        colors, alphas, meta = render(step, args.cameras, height, width, args.device)
        elapsed = (time.perf_counter() - start) * 1000
        print(f"step {step}: colors {list(colors.shape)} on {colors.device}, alphas {list(alphas.shape)}, "
              f"rgb range [{colors[..., :3].min():.3f}, {colors[..., :3].max():.3f}], "
              f"depth ramp {colors[0, 0, 0, 3]:.1f}..{colors[0, -1, 0, 3]:.1f} m, {elapsed:.0f} ms")
    hook.reset()  # a new drive: forget every camera's history
    print("ok")


if __name__ == "__main__":
    main()
