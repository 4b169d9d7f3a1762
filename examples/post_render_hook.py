"""Minimal in-process post-render hook: enhance a gsplat-style render loop in the same process.

    python examples/post_render_hook.py                 # the bundled default model, CPU
    python examples/post_render_hook.py --device cuda --config cosmos-0.6b --weights diffusion_harmonizer.pkl

The "renderer" is a stand-in returning what gsplat's ``rasterization(..., render_mode="RGB+D")``
returns when each Gaussian carries one extra colour feature that is 1 on the inserted actor:
``(render_colors [C, H, W, 5] = R, G, B, actor, depth; render_alphas [C, H, W, 1]; meta)``. The
actor channel rasterizes to the actor mask the bundled model reads (``GsplatAdapter(mask_channel=3)``).
Replace ``fake_rasterization`` by your real call; the hook and adapter stay the same.
"""

from __future__ import annotations

import argparse
import time

import torch

from simharmon.hooks import GsplatAdapter, PostRenderHook
from simharmon.runtime import RuntimeSpec, build_runtime


def fake_rasterization(step: int, cameras: int, height: int, width: int, device: str):
    """Synthetic stand-in for gsplat: a textured scene, an off-colour actor box, a depth ramp, full alpha."""
    ys = torch.linspace(0, 1, height, device=device).view(1, height, 1)
    xs = torch.linspace(0, 1, width, device=device).view(1, 1, width)
    cams = torch.arange(cameras, device=device, dtype=torch.float32).view(cameras, 1, 1)
    phase = 0.05 * step + 0.3 * cams
    shape = (cameras, height, width)
    rgb = torch.stack([0.5 + 0.3 * torch.sin(12 * (xs + phase)) * torch.cos(9 * ys),
                       (0.3 + 0.4 * ys).expand(shape), (0.4 + 0.2 * torch.cos(15 * xs * ys + phase)).expand(shape)],
                      dim=-1).expand(*shape, 3).clone()  # [C, H, W, 3]
    actor = torch.zeros(*shape, 1, device=device)
    top, left = height // 3, width // 4 + step * 2
    actor[:, top:top + height // 3, left:left + width // 4] = 1.0
    rgb = torch.where(actor > 0, (rgb * torch.tensor([1.3, 0.9, 0.7], device=device) + 0.08).clamp(0, 1), rgb)
    depth = (5.0 + 20.0 * ys).expand(cameras, height, width).unsqueeze(-1)
    colors = torch.cat([rgb, actor, depth], dim=-1).contiguous()  # [C, H, W, 5]: RGB, actor feature, depth last
    alphas = torch.ones(cameras, height, width, 1, device=device)
    return colors, alphas, {"step": step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="preset or YAML (default: the bundled model's)")
    parser.add_argument("--weights", action="append", default=[])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--size", default="256x144", help="WxH, multiples of 16")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    engine = build_runtime(RuntimeSpec(weights=tuple(args.weights), config=args.config, device=args.device))
    print(f"engine: {engine.describe()}")
    if engine.untrained:
        print("note: random (untrained) weights -- this shows the plumbing, not meaningful enhancement")
    hook = PostRenderHook(engine, GsplatAdapter("RGB+D", mask_channel=3), stream="gsplat")
    render = hook.wrap(fake_rasterization)  # same signature, enhanced output

    for step in range(args.frames):
        raw = fake_rasterization(step, args.cameras, height, width, args.device)[0]
        start = time.perf_counter()
        colors, alphas, meta = render(step, args.cameras, height, width, args.device)
        elapsed = (time.perf_counter() - start) * 1000
        actor = raw[..., 3] > 0
        change = (colors[..., :3] - raw[..., :3]).abs().mean(-1) * 255
        print(f"step {step}: colors {list(colors.shape)} on {colors.device}, {elapsed:.0f} ms; mean change: actor "
              f"{change[actor].mean():.2f}, background {change[~actor].mean():.2f} levels; depth kept "
              f"{bool(torch.equal(colors[..., 4], raw[..., 4]))}; passthrough {hook.last_passthrough}")


if __name__ == "__main__":
    main()
