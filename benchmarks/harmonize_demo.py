"""Small trained DiffHarmony / DiffHarmony++ on the CPU: every component's intended effect, measured.

    nice -n 10 python benchmarks/harmonize_demo.py --out runs/harmonize-demo
        # trains (resumable per stage) and writes benchmarks/results/harmonize-demo-cpu-<yyyymmdd>.json
    python benchmarks/harmonize_demo.py --smoke --out /tmp/hd   # a few steps of everything, writes no result

Data: procedural street scenes (``simharmon.data.procedural``, redistributable) at SIZE x SIZE with
one ISP composite each (the curation recipe); held-out scenes have ids no training scene has.
Stages (each saves its weights under OUT and is skipped when they exist):

1. a KL VAE of SD's topology (widths w, 2w, 4w, 4w) trained from scratch (no SD VAE here);
2. the latent diffusion harmonizer: SD-inpainting-topology UNet, 9 input channels, DiffHarmony's
   recipe; evaluated with ``simharmon.harmonize`` (Euler-ancestral, 5 steps, seed 0) against the
   composite itself and Reinhard, scored at 256 (iHarmony4 convention, composite background kept);
3. the Harmony-VAE (init from the VAE, zero mask weights and skips), DiffHarmony++'s recipe;
   foreground PSNR of decode-with-condition vs the plain decoder on the same latents;
4. the harmony classifier (torchvision ResNet, 2 classes): held-out accuracy vs chance (0.5);
5. the inverse harmonizer (roles swapped) generating K candidates per held-out real image; the
   classifier's P(composite) of the candidates vs random colour changes of the same strength.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The repository root instead of benchmarks/: benchmarks/kernels.py would shadow the `kernels`
# package that diffusers imports.
sys.path[0] = str(REPO)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402

from benchmarks.host import cpu_model  # noqa: E402
from simharmon.eval.baselines import reinhard_transfer  # noqa: E402
from simharmon.eval.image_metrics import score_image  # noqa: E402
from simharmon.harmonize.data import (  # noqa: E402
    foreground_change,
    mask_tensor,
    procedural_pairs,
    random_colour_change,
    to_model,
)
from simharmon.harmonize.methods import LatentMethod, MethodOptions  # noqa: E402
from simharmon.harmonize.models import (  # noqa: E402
    HarmonyVAE,
    build_classifier,
    harmony_vae_config,
    load_classifier,
    load_components,
    save_component,
    save_prompt_embeds,
    tiny_unet,
    tiny_vae,
)
from simharmon.harmonize.pipeline import LatentHarmonizer  # noqa: E402
from simharmon.harmonize.train import (  # noqa: E402
    TrainSettings,
    encode_latents,
    train_classifier,
    train_harmony_vae,
    train_latent_harmonizer,
    train_vae,
)


def _pub(config):
    return {k: v for k, v in config.items() if not k.startswith("_")}


def _stage(out: Path, name: str, marker: Path, run, record: dict) -> None:
    if marker.exists():
        print(f"[{name}] found {marker}, skipped")
        return
    start = time.perf_counter()
    log = run()
    record.setdefault("training", {})[name] = {"wall_s": round(time.perf_counter() - start, 1), "log": log}
    (out / "stages.json").write_text(json.dumps(record["training"], indent=1))
    print(f"[{name}] {record['training'][name]['wall_s']} s, last loss {log[-1]['loss']:.4f}")


def _fg_psnr(out: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    w = (mask >= 128).astype(np.float64)[:, :, None]
    err = float((((out.astype(np.float64) - gt) ** 2) * w).sum() / max(w.sum() * 3, 1))
    return math.inf if err == 0 else 10 * math.log10(255.0**2 / err)


def _u8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) * 0.5 + 0.5) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _summary(values) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "median": float(np.median(a)), "p10": float(np.quantile(a, 0.1)),
            "p90": float(np.quantile(a, 0.9)), "n": int(a.size)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--train", type=int, default=600)
    p.add_argument("--test", type=int, default=48)
    p.add_argument("--vae-width", type=int, default=8)
    p.add_argument("--unet-width", type=int, default=16)
    p.add_argument("--vae-steps", type=int, default=800)
    p.add_argument("--unet-steps", type=int, default=2000)
    p.add_argument("--hvae-steps", type=int, default=600)
    p.add_argument("--clf-steps", type=int, default=600)
    p.add_argument("--clf-arch", default="resnet18")
    p.add_argument("--candidates", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    if args.smoke:
        args.train, args.test, args.candidates = 16, 4, 2
        args.vae_steps = args.unet_steps = args.hvae_steps = args.clf_steps = 3
    torch.set_num_threads(args.threads)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()
    record = {"command": "python " + " ".join(sys.argv), "host": {"cpu": cpu_model(), "threads": args.threads,
              "torch": torch.__version__, "python": platform.python_version()}, "settings": vars(args) | {"out": str(out)}}
    prev = out / "stages.json"
    if prev.exists():
        record["training"] = json.loads(prev.read_text())

    train = procedural_pairs(args.train, args.size, seed=0)
    test = procedural_pairs(args.test, args.size, seed=1, start=100_000)
    reals, comps, masks = to_model(train.reals), to_model(train.composites), mask_tensor(train.masks)
    root, inv_root = out / "weights", out / "inverse"

    # 1. VAE
    vae_cfg = tiny_vae(args.vae_width)
    vae = AutoencoderKL.from_config(_pub(vae_cfg))

    def run_vae():
        log = train_vae(vae, torch.cat([reals, comps]), TrainSettings(args.vae_steps, batch=8, lr=1e-3, log_every=50))
        save_component(root / "vae", vae, dict(vae.config), "AutoencoderKL")
        return log
    _stage(out, "vae", root / "vae" / "config.json", run_vae, record)
    comps_loaded = load_components([root / "vae"])
    vae = comps_loaded.vae
    scaling = float(vae.config.scaling_factor)
    real_lat, comp_lat = encode_latents(vae, reals, scaling), encode_latents(vae, comps, scaling)

    prompt = torch.randn(1, 4, 32, generator=torch.Generator().manual_seed(0))  # the constant "empty prompt"
    for folder in (root, inv_root):
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "prompt_embeds.safetensors").exists():
            save_prompt_embeds(folder / "prompt_embeds.safetensors", prompt)

    # 2. harmonizer, 5. inverse harmonizer (same recipe, roles swapped)
    for mode, folder in (("normal", root), ("inverse", inv_root)):
        def run_unet(mode=mode, folder=folder):
            torch.manual_seed(1)
            unet = UNet2DConditionModel.from_config(_pub(tiny_unet(args.unet_width, 32)))
            log = train_latent_harmonizer(unet, prompt, real_lat, comp_lat, masks,
                                          TrainSettings(args.unet_steps, batch=16, lr=5e-4, log_every=100), mode=mode)
            save_component(folder / "unet", unet, dict(unet.config), "UNet2DConditionModel")
            return log
        _stage(out, f"unet_{mode}", folder / "unet" / "config.json", run_unet, record)

    # 3. Harmony-VAE
    def run_hvae():
        hvae = HarmonyVAE.from_vae(vae)
        log = train_harmony_vae(hvae, reals, comps, masks, TrainSettings(args.hvae_steps, batch=8, lr=5e-4, log_every=50))
        save_component(root / "condition_vae", hvae, harmony_vae_config(dict(vae.config)), "ConditionVAE")
        return log
    _stage(out, "harmony_vae", root / "condition_vae" / "config.json", run_hvae, record)

    # 4. classifier: real (0) vs composite (1)
    clf_path = out / "classifier.safetensors"

    def run_clf():
        from safetensors.torch import save_file
        clf = build_classifier(args.clf_arch, input_size=args.size)
        images = torch.cat([reals, comps]) * 0.5 + 0.5
        labels = torch.cat([torch.zeros(len(reals)), torch.ones(len(comps))]).long()
        log = train_classifier(clf, images, labels, TrainSettings(args.clf_steps, batch=32, lr=1e-3, log_every=50))
        save_file({k: v.contiguous() for k, v in clf.net.state_dict().items()}, str(clf_path))
        return log
    _stage(out, "classifier", clf_path, run_clf, record)

    # -- evaluation, through the project's loaders and pipeline --------------------------------
    options = MethodOptions(weights=(root,), steps=5, seed=0, resolution=args.size)
    comps_all = load_components([root])
    plain = LatentMethod("diffharmony", LatentHarmonizer(comps_all.unet, comps_all.vae, comps_all.prompt_embeds,
                                                        comps_all.scheduler_config), options, False)
    plus = LatentMethod("diffharmony++", LatentHarmonizer(comps_all.unet, comps_all.vae, comps_all.prompt_embeds,
                                                         comps_all.scheduler_config,
                                                         harmony_vae=comps_all.harmony_vae), options, False)
    methods = {"composite (identity)": lambda im, m: im, "reinhard": reinhard_transfer,
               "diffharmony": plain, "diffharmony++": plus}
    scores = {name: {"fmse": [], "psnr": [], "mse": []} for name in methods}
    for i in range(len(test)):
        comp_i, real_i, mask_i = test.composites[i], test.reals[i], test.masks[i]
        for name, fn in methods.items():
            s = score_image(fn(comp_i, mask_i), real_i, mask_i)
            for key in ("fmse", "psnr", "mse"):
                scores[name][key].append(getattr(s, key))
    record["harmonizer"] = {"convention": "scored at 256x256 (bicubic up from the model's size), composite "
                                          "background kept outside the mask for every method",
                            "methods": {n: {k: _summary(v) for k, v in d.items()} for n, d in scores.items()}}

    # Harmony-VAE vs the plain decoder on the same latents.
    t_real, t_comp, t_mask = to_model(test.reals), to_model(test.composites), mask_tensor(test.masks)
    hv = comps_all.harmony_vae
    cond = torch.cat([t_comp, (t_mask >= 0.5).float()], dim=1)
    with torch.no_grad():
        z_real = encode_latents(vae, t_real, 1.0)
        z_cond, z_mask = plus.harmonizer.encode_condition(t_comp, t_mask)
        z_sampled = plus.harmonizer.sample(z_cond, z_mask, options.sampler()) / scaling
        hvae_result = {}
        for label, z in (("E(real)", z_real), ("harmonizer output", z_sampled)):
            plain_img = _u8(vae.decode(z).sample)
            cond_img = _u8(hv.decode_with_condition(z, cond))
            a = [_fg_psnr(plain_img[i], test.reals[i], test.masks[i]) for i in range(len(test))]
            b = [_fg_psnr(cond_img[i], test.reals[i], test.masks[i]) for i in range(len(test))]
            hvae_result[label] = {"plain_decoder_fg_psnr": _summary(a), "harmony_vae_fg_psnr": _summary(b),
                                  "margin_db_mean": float(np.mean(b) - np.mean(a)),
                                  "harmony_vae_wins": float(np.mean(np.asarray(b) > np.asarray(a)))}
    record["harmony_vae"] = hvae_result

    # Classifier accuracy on held-out real vs composite.
    clf, _ = load_classifier(clf_path, input_size=args.size)
    with torch.no_grad():
        p_real = clf.composite_probability(t_real * 0.5 + 0.5)
        p_comp = clf.composite_probability(t_comp * 0.5 + 0.5)
    acc = float(((p_real < 0.5).float().sum() + (p_comp >= 0.5).float().sum()) / (2 * len(test)))
    record["classifier"] = {"arch": args.clf_arch, "input_size": args.size, "heldout_accuracy": acc, "chance": 0.5,
                            "n": 2 * len(test), "p_composite_real": _summary(p_real.tolist()),
                            "p_composite_composite": _summary(p_comp.tolist())}

    # Inverse harmonization candidates vs random colour changes of the same strength.
    inv = load_components([inv_root, root / "vae"])
    inverse = LatentMethod("inverse", LatentHarmonizer(inv.unet, inv.vae, inv.prompt_embeds, inv.scheduler_config),
                           options, False)
    rng = np.random.default_rng(5)
    cand_p, rand_p, strengths, chosen_p = [], [], [], []
    for i in range(len(test)):
        real_i, mask_i = test.reals[i], test.masks[i]
        cands = [inverse(real_i, mask_i, seed=k) for k in range(args.candidates)]
        randoms = []
        for c in cands:
            s = foreground_change(c, real_i, mask_i)
            strengths.append(s)
            randoms.append(random_colour_change(real_i, mask_i, s, rng)[0])
        with torch.no_grad():
            pc = clf.composite_probability(to_model(np.stack(cands)) * 0.5 + 0.5).tolist()
            pr = clf.composite_probability(to_model(np.stack(randoms)) * 0.5 + 0.5).tolist()
        cand_p += pc
        rand_p += pr
        chosen_p.append(max(pc))
    hist = np.linspace(0, 1, 11)
    record["inverse"] = {
        "candidates_per_image": args.candidates, "strength_mean_abs_levels": _summary(strengths),
        "p_composite_candidates": _summary(cand_p), "p_composite_random_colour": _summary(rand_p),
        "p_composite_selected_candidate": _summary(chosen_p),
        "detected_rate_candidates": float(np.mean(np.asarray(cand_p) >= 0.5)),
        "detected_rate_random_colour": float(np.mean(np.asarray(rand_p) >= 0.5)),
        "histogram_edges": hist.tolist(),
        "histogram_candidates": np.histogram(cand_p, hist)[0].tolist(),
        "histogram_random_colour": np.histogram(rand_p, hist)[0].tolist(),
    }
    record["wall_s_this_run"] = round(time.perf_counter() - wall, 1)
    text = json.dumps(record, indent=1)
    if args.smoke:
        print(text[:3000])
        return 0
    path = REPO / "benchmarks" / "results" / f"harmonize-demo-cpu-{dt.date.today():%Y%m%d}.json"
    path.write_text(text + "\n")
    print(json.dumps({k: record[k] for k in ("harmonizer", "harmony_vae", "classifier", "inverse")}, indent=1)[:6000])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
