"""The bundled default model against its targets (issues 7 and 15), on the CPU; writes a JSON result.

    python benchmarks/default_model.py                 # writes benchmarks/results/default-model-cpu-<yyyymmdd>.json
    python benchmarks/default_model.py --smoke         # a few samples and frames, prints, writes nothing
    python benchmarks/default_model.py --card RESULT.json --train-log runs/train-default/log.jsonl
                                                       # (re)writes simharmon/data/default_model/MODEL_CARD.md

Measures, with the weights in ``simharmon/data/default_model/`` (or ``--weights``):

- real-photo held-out composites (``simharmon.eval.photo_heldout``: 8 photographs never trained on,
  ``--photo-composites`` per photo and size, at 256x144 and 512x288): per composite fMSE / PSNR of
  the model, the composite (identity) and Reinhard, and the Laplacian energy inside the mask;
  targets: mean fMSE <= 0.5x identity's and <= 0.8x Reinhard's, beats identity on >= 90 %, no
  composite with identity fMSE < 100 worse by > 50, Laplacian energy >= 0.8x the truth's;
- temporal: jittered pan / zoom sequences of the held-out photos; warping error inside the mask of
  the model as a stream (its history) vs the same model frame by frame; target ratio <= 0.8;
- procedural held-out ISP composites (``simharmon.eval.heldout``) and the sample drive (fMSE / PSNR
  per camera, warping error); targets: no worse than the issue-7 model's committed result
  (``PREVIOUS_RESULT``), and on the drive both cameras beat their input's fMSE;
- speed: one 256x144 stream with its actor mask, ``--threads`` torch threads (default 2), the
  exact optimizations on (as ``simharmon replay`` runs it); p50 and mean per frame after a warm-up,
  with the load average before and after; target: >= 15 fps.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.default_model_card import write_card  # noqa: E402
from benchmarks.host import cpu_model  # noqa: E402
from simharmon.eval.heldout import (  # noqa: E402
    drive_warping_errors,
    heldout_composites,
    image_enhancer,
    score_drive_frames,
    score_heldout,
    sequence_enhancer,
    stream_runner,
)
from simharmon.eval.photo_heldout import (  # noqa: E402
    heldout_sequences,
    photo_heldout_composites,
    photo_targets,
    score_photo_heldout,
    sequence_flicker,
)
from simharmon.io.drives import open_drive  # noqa: E402
from simharmon.models.bundled import bundled_weights  # noqa: E402
from simharmon.models.enhancer import build_enhancer  # noqa: E402
from simharmon.runtime.factory import engine_for  # noqa: E402

SAMPLE_DRIVE = REPO / "simharmon" / "data" / "sample_drive"
# The issue-7 bundled model's committed result: "no worse than today" on procedural data and the drive.
PREVIOUS_RESULT = REPO / "benchmarks" / "results" / "default-model-cpu-20261123.json"


def _host() -> dict:
    cpu = cpu_model()
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                    capture_output=True, text=True).stdout.strip())
    except OSError:
        commit, dirty = "unknown", None
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "load_average": list(os.getloadavg()), "date": dt.date.today().isoformat(), "commit": commit,
            "dirty": dirty}


def measure_speed(engine, frames: int, warmup: int) -> dict:
    """One stream at the drive's 256x144, masks given; per-frame wall time of the engine's step (what
    every front door runs: ``Engine.step_many``, uint8 in and out)."""
    drive = open_drive(SAMPLE_DRIVE)
    camera = drive.cameras[0]
    count = drive.frame_count(camera)
    images = [drive.read_frame(camera, i) for i in range(count)]
    masks = [drive.read_mask(camera, i) for i in range(count)]
    inputs = [(torch.from_numpy(images[i]), {"mask": masks[i]}) for i in range(count)]
    times = []
    with torch.inference_mode():
        for i in range(warmup + frames):
            frame, extra = inputs[i % count]
            began = time.perf_counter()
            engine.step_many({camera: frame}, {camera: extra})
            if i >= warmup:
                times.append((time.perf_counter() - began) * 1000.0)
    p50 = statistics.median(times)
    mean = statistics.fmean(times)
    return {"width": images[0].shape[1], "height": images[0].shape[0], "frames": frames, "warmup": warmup,
            "p50_ms": round(p50, 3), "mean_ms": round(mean, 3), "p90_ms": round(sorted(times)[int(0.9 * len(times))], 3),
            "fps_p50": round(1000.0 / p50, 2), "fps_mean": round(1000.0 / mean, 2)}


def _round(value):
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return value


def measure(engine, args) -> dict:
    """Every measurement of the module docstring; returns (result parts, targets)."""
    model = engine.model
    began = time.perf_counter()
    enhance = image_enhancer(model)
    photo = score_photo_heldout(photo_heldout_composites(args.photo_composites, photos=args.photos), enhance)
    flicker = sequence_flicker(heldout_sequences(args.sequences, frames=args.sequence_frames), stream_runner(model))
    flicker.update(sequences=args.sequences, frames=args.sequence_frames, size="256x144", jitter_ev=0.2)
    procedural = score_heldout(heldout_composites(args.heldout), enhance)
    drive = open_drive(SAMPLE_DRIVE)
    kept: dict = {}
    warping = drive_warping_errors(drive, sequence_enhancer(model), drive.cameras[:1] if args.smoke else None, kept)
    drive_scores = score_drive_frames(drive, kept)
    load_before = list(os.getloadavg())
    speed = measure_speed(engine, args.frames, args.warmup)
    speed["load_average_before"], speed["load_average_after"] = load_before, list(os.getloadavg())
    previous = json.loads(PREVIOUS_RESULT.read_text()) if PREVIOUS_RESULT.is_file() else None
    targets = {f"photo_{name}": met for name, met in photo_targets(photo["summary"]["overall"]).items()}
    for size in (k for k in photo["summary"] if k != "overall"):
        targets.update({f"photo_{size}_{name}": met for name, met in photo_targets(photo["summary"][size]).items()})
    ratio = flicker["ratio_sequence_to_frame_by_frame"]
    targets["temporal_sequence_flicker_at_most_0.8_of_frame_by_frame"] = ratio is not None and ratio <= 0.8
    targets["sample_drive_every_camera_beats_input_fmse"] = all(
        s["model"]["fmse"] < s["input"]["fmse"] for s in drive_scores.values())
    targets["sample_drive_warping_error_not_above_input"] = warping["model"] <= warping["input"]
    if previous is not None:
        before = previous["heldout"]["fmse"]["model"]
        targets["procedural_fmse_not_above_issue7_model"] = procedural.fmse["model"] <= before
        old = previous.get("sample_drive_scores", {})
        for camera, scores in drive_scores.items():
            if camera in old:
                targets[f"sample_drive_{camera}_fmse_not_above_issue7_model"] = (
                    scores["model"]["fmse"] <= old[camera]["model"]["fmse"])
    targets["fps_at_least_15"] = speed["fps_p50"] >= 15.0
    parts = {
        "photo_heldout": {"summary": photo["summary"], "rows": photo["rows"]},
        "temporal_flicker": flicker,
        "heldout": {**procedural.to_dict(),
                    "fmse_ratio_to_input": round(procedural.fmse["model"] / procedural.fmse["input"], 4)},
        "sample_drive_warping_error": warping, "sample_drive_scores": drive_scores, "speed": speed,
        "issue7_model": None if previous is None else {
            "result": PREVIOUS_RESULT.name, "heldout_fmse": previous["heldout"]["fmse"]["model"],
            "sample_drive_scores": previous.get("sample_drive_scores"),
            "warping_error": previous["sample_drive_warping_error"]["model"]},
        "seconds": round(time.perf_counter() - began, 1),
    }
    return parts, targets


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=None, help="default: the bundled model")
    parser.add_argument("--heldout", type=int, default=64, help="procedural held-out composites (default 64)")
    parser.add_argument("--photo-composites", type=int, default=4,
                        help="real-photo composites per held-out photo and size (default 4: 64 in all)")
    parser.add_argument("--photos", type=int, default=None, help="only the first N held-out photos")
    parser.add_argument("--sequences", type=int, default=8, help="jittered real-photo sequences (default 8)")
    parser.add_argument("--sequence-frames", type=int, default=12)
    parser.add_argument("--frames", type=int, default=300, help="timed frames (default 300)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2: the target's 2 cores)")
    parser.add_argument("--smoke", action="store_true", help="a few samples, one camera, 10 frames; print (and --out)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--card", type=Path, default=None, metavar="RESULT_JSON",
                        help="write MODEL_CARD.md from this result file (with --train-log) instead of measuring")
    parser.add_argument("--train-log", type=Path, default=None, help="the training run's log.jsonl (for --card)")
    args = parser.parse_args(argv)
    if args.card is not None:
        if args.train_log is None:
            parser.error("--card needs --train-log")
        from simharmon.models.bundled import MODEL_CARD

        write_card(args.card, args.train_log, args.weights or bundled_weights(), MODEL_CARD)
        print(f"wrote {MODEL_CARD}", file=sys.stderr)
        return 0
    if args.smoke:
        args.heldout, args.photo_composites, args.photos = 4, 1, 2
        args.sequences, args.sequence_frames, args.frames, args.warmup = 1, 3, 10, 2
    torch.set_num_threads(args.threads)
    weights = args.weights or bundled_weights()
    plain = build_enhancer(None, weights=[str(weights)], device="cpu").eval()
    engine = engine_for(plain)  # the runtime every front door uses
    parts, targets = measure(engine, args)
    result = {
        "benchmark": "default_model", "weights": str(Path(weights).resolve().relative_to(REPO))
        if Path(weights).resolve().is_relative_to(REPO) else str(weights),
        "model": plain.config.name, "parameters": sum(p.numel() for p in plain.parameters()),
        "torch_threads": args.threads, "host": _host(), **parts, "targets": targets,
        "all_targets_met": all(targets.values()), "targets_missed": sorted(k for k, v in targets.items() if not v),
    }
    if args.smoke:
        result["smoke"] = True
        result["note"] = "smoke run: a few samples and frames, NOT a result"
    text = json.dumps(_round(result), indent=2)
    print(json.dumps({k: result[k] for k in ("targets_missed", "all_targets_met")}, indent=2))
    if args.smoke and args.out is not None:
        args.out.write_text(text + "\n")
    if not args.smoke:
        out = args.out or REPO / "benchmarks" / "results" / f"default-model-cpu-{dt.date.today():%Y%m%d}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, out)
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
