"""Matplotlib plots of a replay: per-frame PSNR, fMSE and warping error over time, latency histogram.

Each plot is a PNG written atomically; one panel per camera, one line per method. A metric that
is not available (no ground truth, no mask, no flow) gives a panel saying so instead of a line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

from matplotlib.figure import Figure

from ..io.atomic import atomic_path
from .evaluate import GROUND_TRUTH, METHODS

__all__ = ["PLOTS", "write_plots"]

# file stem -> (row key, y label, title)
PLOTS = {
    "psnr": ("psnr", "PSNR (dB, 256x256)", "PSNR per frame (higher is better)"),
    "fmse": ("fmse", "fMSE (0..255 levels)", "Foreground MSE per frame (lower is better)"),
    "warping_error": ("warp_error", "warping error", "Warping error per pair t -> t+1 (lower is better)"),
}
_STYLE = {"enhancer": ("tab:blue", "-"), "identity": ("tab:gray", "--"), "reinhard": ("tab:orange", "-."),
          GROUND_TRUTH: ("tab:green", ":")}


def _subplots(*args, **kwargs):
    """A figure of its own (no pyplot: nothing global, and the caller's backend is left alone)."""
    figure = Figure()
    return figure, figure.subplots(*args, **kwargs)


def _save(figure, path: Path) -> None:
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png", dpi=100, metadata={"Software": None})


def _metric_plot(rows: List[Dict[str, object]], cameras: Sequence[str], key: str, ylabel: str, title: str, path: Path):
    figure, axes = _subplots(len(cameras), 1, squeeze=False, sharex=True)
    figure.set_size_inches(8, 2.6 * len(cameras))
    for axis, camera in zip(axes[:, 0], cameras):
        drawn = False
        for method in METHODS + (GROUND_TRUTH,):
            points = [(r["index"], r[key]) for r in rows if r["camera"] == camera and r["method"] == method
                      and r[key] is not None and r[key] != float("inf")]
            if points:
                colour, style = _STYLE.get(method, ("black", "-"))
                axis.plot([p[0] for p in points], [p[1] for p in points], style, color=colour, label=method,
                          marker="." if len(points) < 60 else None)
                drawn = True
        axis.set_title(f"{camera}", fontsize=9, loc="left")
        axis.set_ylabel(ylabel, fontsize=8)
        axis.grid(alpha=0.3)
        if drawn:
            axis.legend(fontsize=7, loc="best")
        else:
            axis.text(0.5, 0.5, "not available for this camera", ha="center", va="center", transform=axis.transAxes)
    axes[-1, 0].set_xlabel("frame")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    _save(figure, path)


def _latency_plot(rows: List[Dict[str, object]], path: Path) -> None:
    values = [float(r["latency_ms"]) for r in rows if r["method"] == "enhancer" and r["latency_ms"] is not None]
    figure, axis = _subplots()
    figure.set_size_inches(8, 3)
    if values:
        axis.hist(values, bins=min(40, max(5, len(values) // 2)), color="tab:blue", alpha=0.8)
        mean = sum(values) / len(values)
        axis.axvline(mean, color="black", linestyle="--", label=f"mean {mean:.1f} ms")
        axis.legend(fontsize=8)
    else:
        axis.text(0.5, 0.5, "no latency measured", ha="center", va="center", transform=axis.transAxes)
    axis.set_xlabel("enhancer latency per frame (ms)")
    axis.set_ylabel("frames")
    axis.set_title("Latency histogram (all cameras)", fontsize=10)
    figure.tight_layout()
    _save(figure, path)


def write_plots(rows: List[Dict[str, object]], out_dir: Path) -> Dict[str, Path]:
    """Write ``psnr.png``, ``fmse.png``, ``warping_error.png``, ``latency.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    cameras: List[str] = []
    for row in rows:
        if row["camera"] not in cameras:
            cameras.append(str(row["camera"]))
    written: Dict[str, Path] = {}
    if not cameras:
        return written
    for stem, (key, ylabel, title) in PLOTS.items():
        path = out_dir / f"{stem}.png"
        _metric_plot(rows, cameras, key, ylabel, title, path)
        written[stem] = path
    written["latency"] = out_dir / "latency.png"
    _latency_plot(rows, written["latency"])
    return written
