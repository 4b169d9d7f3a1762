"""One self-contained HTML report of a replay: summary tables, plots and videos, embedded.

Plots (PNG) and videos (MP4) are embedded as data URIs, so the single file can be mailed or
archived; videos larger than ``max_embed_bytes`` in total are linked by relative path instead.
Numbers that could not be computed are shown as "not computed" with the reason, never as a value.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Dict, List, Optional

from ..io.atomic import atomic_write_bytes
from .evaluate import GROUND_TRUTH
from .image_metrics import FG_BINS
from .summary import LATENCY_WARMUP_FRAMES
from .verdict import losses, verdict_lines

__all__ = ["write_report", "format_number"]

_COLUMNS = (("psnr", "PSNR &uarr;", 2), ("mse", "MSE &darr;", 2), ("ssim", "SSIM &uarr;", 4), ("fmse", "fMSE &darr;", 2),
            ("bmse", "bMSE &darr;", 2), ("lpips", "LPIPS &darr;", 4), ("dino_struct", "DINO-struct &darr;", 5))
_CSS = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:8px 0 18px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}.warn{background:#fff3cd;border:1px solid #e0c060;
padding:8px 12px}.loss{background:#f8d7da;border:2px solid #c0392b;padding:8px 12px}.win{color:#1e7e34}
.w{color:#1e7e34}.l{color:#c0392b;font-weight:bold}.na{color:#999}.note{color:#555;font-size:90%}img,video{max-width:100%;border:1px solid #ddd}"""


def format_number(value, digits: int = 3, scientific: bool = False) -> str:
    """A table cell: the number (fixed ``digits`` decimals, or with ``scientific`` ``digits``
    significant digits in scientific notation, for values spanning orders of magnitude), "inf", or
    a greyed "not computed"."""
    if value is None:
        return '<span class="na">not computed</span>'
    if isinstance(value, str):
        return html.escape(value)
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if scientific:
        return "0" if value == 0 else f"{value:.{max(digits - 1, 0)}e}"
    return f"{value:.{digits}f}"


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _image_table(methods: Dict[str, Dict], block_key: Optional[str] = None, key: Optional[str] = None) -> str:
    rows = ["<tr><th>method</th><th>frames</th>" + "".join(f"<th>{label}</th>" for _, label, _ in _COLUMNS) + "</tr>"]
    for method, entry in methods.items():
        if "overall" not in entry:
            continue
        block = entry["overall"] if block_key is None else entry[block_key].get(key, {})
        if not block or not block.get("frames"):
            continue
        cells = "".join(f"<td>{format_number(block.get(name), digits)}</td>" for name, _, digits in _COLUMNS)
        rows.append(f"<tr><td>{html.escape(method)}</td><td>{block['frames']}</td>{cells}</tr>")
    return "<table>" + "".join(rows) + "</table>" if len(rows) > 1 else '<p class="na">no frames</p>'


def _temporal_table(methods: Dict[str, Dict]) -> str:
    # Warping errors of good outputs are 1e-6..1e-3: fixed decimals would print them as 0.000003.
    rows = ["<tr><th>method</th><th>warping error &darr; (mean squared difference of [0, 1] intensities; pairs)"
            "</th><th>VBench flicker &uarr; (static-camera metric, [0, 1])</th></tr>"]
    for method, entry in methods.items():
        pairs = entry.get("warp_error_pairs", 0)
        rows.append(f"<tr><td>{html.escape(method)}</td><td>{format_number(entry.get('warp_error'), 3, True)} "
                    f"({pairs})</td><td>{format_number(entry.get('vbench_flicker'), 4)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _verdict_section(summary: Dict) -> str:
    """Losses in a warning box, then the plain verdict per scope and a table of every comparison."""
    result = summary.get("verdicts")
    if not result or not result.get("overall"):
        return ""
    parts = ["<h2>Verdict: does the model beat its input and Reinhard?</h2>"]
    lost = losses(result)
    if lost:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in lost)
        parts.append(f"<div class='loss'><b>The model loses on {len(lost)} comparison(s):</b><ul>{items}</ul></div>")
    else:
        parts.append("<p class='win'><b>The model beats or ties its input and Reinhard on every metric computed.</b></p>")
    lines = [line for line in verdict_lines(result) if not line.startswith("LOSS")]
    parts.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>")
    word = {"win": "<span class='w'>better</span>", "loss": "<span class='l'>WORSE</span>", "tie": "tie", None: "n/a"}
    rows = ["<tr><th>scope</th><th>metric</th><th>model</th><th>input</th><th>Reinhard</th><th>vs input</th>"
            "<th>vs Reinhard</th></tr>"]
    scopes = [("overall", result["overall"])] + [(f"camera {c}", r) for c, r in result["per_camera"].items()]
    for scope, metrics in scopes:
        for row in metrics.values():
            sci = row["label"] == "warping error"  # 1e-6-sized values: scientific notation, not 0.000003
            model, source, reinhard = (format_number(row[k], 3, scientific=sci) for k in ("model", "input", "reinhard"))
            rows.append(f"<tr><td>{html.escape(scope)}</td><td>{html.escape(row['label'])}</td>"
                        f"<td>{model}</td><td>{source}</td>"
                        f"<td>{reinhard}</td><td>{word[row['vs_input']]}</td>"
                        f"<td>{word[row['vs_reinhard']]}</td></tr>")
    parts.append("<table>" + "".join(rows) + "</table>")
    return "\n".join(parts)


def _latency_table(entry: Dict, context: Optional[Dict]) -> str:
    """Latency (ms) of all frames and after warm-up, with what it was measured on and under."""
    rows = [("all frames", entry.get("latency_ms")),
            (f"after warm-up (the first {LATENCY_WARMUP_FRAMES} frame(s) of each camera left out)",
             entry.get("latency_ms_after_warmup"))]
    if not rows[0][1]:
        return '<p class="na">no latency measured</p>'
    keys = ("count", "mean", "p50", "p90", "p99", "max", "fps")
    table = ["<tr><th>frames</th>" + "".join(f"<th>{k}{'' if k in ('count', 'fps') else ' (ms)'}</th>" for k in keys)
             + "</tr>"]
    for label, stats in rows:
        cells = "".join(f"<td>{format_number((stats or {}).get(k), 0 if k == 'count' else 1)}</td>" for k in keys)
        table.append(f"<tr><td>{html.escape(label)}</td>{cells}</tr>")
    return "<table>" + "".join(table) + "</table>" + _latency_context(context)


def _latency_context(context: Optional[Dict]) -> str:
    if not context:
        return '<p class="note">Measurement conditions were not recorded.</p>'
    load = context.get("load_avg_1m") or {}
    load_text = ("not available on this platform" if load.get("start") is None else
                 f"{load['start']:.2f} at the start, {load.get('end', 0.0):.2f} at the end (1-minute load average, "
                 f"{context.get('cpu_count')} CPUs)")
    return (f"<p class='note'>Measured on {html.escape(str(context.get('device')))} with "
            f"{context.get('torch_threads')} torch thread(s); machine load: {html.escape(load_text)}; one "
            "engine step per frame, device-synchronized, the frames of all cameras interleaved. "
            "The first frames of a camera include one-time allocation (and compilation) and run with an empty "
            "history, hence the row after warm-up.</p>")


def write_report(path: Path, summary: Dict, plots: Dict[str, Path], videos: Dict[str, Path],
                 max_embed_bytes: int = 40_000_000) -> Path:
    """Write the HTML report to ``path`` (atomically) and return it."""
    path = Path(path)
    methods: Dict[str, Dict] = summary.get("methods", {})
    drive = summary.get("drive", {})
    parts: List[str] = [f"<!doctype html><html><head><meta charset='utf-8'><title>simharmon replay: "
                        f"{html.escape(str(drive.get('name', '')))}</title><style>{_CSS}</style></head><body>",
                        f"<h1>Replay of {html.escape(str(drive.get('name', '')))}</h1>",
                        f"<p class='note'>drive: {html.escape(str(drive.get('path', '')))} ({html.escape(str(drive.get('kind', '')))}), "
                        f"{drive.get('fps', '')} fps; cameras: {html.escape(', '.join(drive.get('cameras', [])))}; "
                        f"weights: {html.escape(str(summary.get('weights', '')))}; config: "
                        f"{html.escape(str(summary.get('config_name', '')))}</p>"]
    if drive.get("notes"):
        items = "".join(f"<li>{html.escape(str(note))}</li>" for note in drive["notes"])
        parts.append(f"<p class='note'>Notes on the input:</p><ul class='note'>{items}</ul>")
    if summary.get("untrained"):
        parts.append("<p class='warn'><b>Untrained weights.</b> The enhancer ran with random weights: its numbers "
                     "only exercise the pipeline and are not meaningful enhancements.</p>")
    if summary.get("status") not in (None, "complete"):
        parts.append(f"<p class='warn'>Run status: {html.escape(str(summary.get('status')))}; only the frames "
                     "enhanced so far are scored.</p>")
    parts.append(_verdict_section(summary))
    parts.append("<h2>Image metrics (vs. ground truth, 256x256)</h2>")
    if any("overall" in e for e in methods.values()):
        parts.append(_image_table(methods))
        parts.append("<h3>By foreground ratio</h3>")
        for label, _, _ in FG_BINS:
            parts.append(f"<h4>{html.escape(label)}</h4>" + _image_table(methods, "fg_bins", label))
        for camera in drive.get("cameras", []):
            parts.append(f"<h3>Camera {html.escape(camera)}</h3>" + _image_table(methods, "per_camera", camera))
    else:
        parts.append(f"<p class='na'>{html.escape(summary.get('not_computed', {}).get('image_metrics', 'not computed'))}</p>")
    parts.append("<h2>Temporal metrics</h2>" + _temporal_table(methods))
    sources = ", ".join(f"{c}: {s or 'none'}" for c, s in summary.get("flow_source", {}).items())
    parts.append(f"<p class='note'>Flow for the warping error: {html.escape(sources)}. The {GROUND_TRUTH} row scores the "
                 "ground-truth sequence itself (a consistency reference). VBench flicker assumes a static camera; "
                 "with a moving ego camera read the warping error.</p>")
    parts.append("<h2>Latency</h2>" + _latency_table(methods.get("enhancer", {}), summary.get("latency_context")))
    not_computed = summary.get("not_computed", {})
    if not_computed:
        items = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in not_computed.items())
        parts.append(f"<h2>Not computed</h2><ul>{items}</ul>")
    parts.append("<h2>Plots</h2>")
    for name, plot in plots.items():
        parts.append(f"<h3>{html.escape(name)}</h3><img alt='{html.escape(name)}' src='{_data_uri(plot, 'image/png')}'>")
    parts.append("<h2>Videos</h2>")
    embed = sum(v.stat().st_size for v in videos.values()) <= max_embed_bytes
    for name, video in videos.items():
        source = _data_uri(video, "video/mp4") if embed else html.escape(video.relative_to(path.parent).as_posix())
        parts.append(f"<h3>{html.escape(name)}</h3><video controls loop muted src='{source}'></video>")
    conventions = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>"
                          for k, v in summary.get("conventions", {}).items())
    parts.append(f"<h2>How the numbers are computed</h2><ul class='note'>{conventions}</ul></body></html>")
    atomic_write_bytes(path, "\n".join(parts).encode("utf-8"))
    return path
