"""Plain verdicts of a replay: does the enhancer beat its input and Reinhard, per camera and overall?

For every metric that was computed, the enhancer's value is compared with the input's ("identity")
and Reinhard's, in the metric's own direction (lower fMSE is better, higher PSNR is better). A
comparison is a "win", a "loss" or a "tie" (equal to the reported precision: 1e-9 relative).
:func:`verdict_lines` says it in words, losses first, for the terminal and the top of the report.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

__all__ = ["VERDICT_METRICS", "verdicts", "verdict_lines", "losses"]

# (summary key, label, higher is better)
VERDICT_METRICS = (("fmse", "fMSE", False), ("psnr", "PSNR", True), ("ssim", "SSIM", True), ("mse", "MSE", False),
                   ("lpips", "LPIPS", False), ("dino_struct", "DINO-struct", False), ("warp_error", "warping error", False))
_BASELINES = (("input", "identity"), ("reinhard", "reinhard"))


def _compare(model: Optional[float], other: Optional[float], higher: bool) -> Optional[str]:
    if model is None or other is None or isinstance(model, str) or isinstance(other, str):
        return None
    if model == other or (math.isfinite(model) and math.isfinite(other)
                          and abs(model - other) <= 1e-9 * max(abs(model), abs(other))):
        return "tie"
    return "win" if (model > other) == higher else "loss"


def _values(methods: Dict[str, dict], method: str, camera: Optional[str]) -> Dict[str, Optional[float]]:
    entry = methods.get(method, {})
    block = entry.get("overall", {}) if camera is None else entry.get("per_camera", {}).get(camera, {})
    values = {key: block.get(key) for key, _, _ in VERDICT_METRICS if key != "warp_error"}
    values["warp_error"] = entry.get("warp_error") if camera is None else entry.get("warp_error_per_camera", {}).get(camera)
    return values


def _scope(methods: Dict[str, dict], camera: Optional[str]) -> Dict[str, dict]:
    model = _values(methods, "enhancer", camera)
    others = {name: _values(methods, method, camera) for name, method in _BASELINES}
    result = {}
    for key, label, higher in VERDICT_METRICS:
        if model[key] is None:
            continue
        row = {"label": label, "higher_is_better": higher, "model": model[key]}
        for name, _ in _BASELINES:
            row[name] = others[name][key]
            row[f"vs_{name}"] = _compare(model[key], others[name][key], higher)
        result[key] = row
    return result


def verdicts(summary: Dict[str, object]) -> Dict[str, object]:
    """``{"overall": {metric: row}, "per_camera": {camera: {metric: row}}}`` from a replay summary
    (``summarize``); row: label, model / input / reinhard values, ``vs_input`` / ``vs_reinhard``
    ("win", "loss", "tie" or None when a value is missing)."""
    methods = summary.get("methods", {})
    cameras = list(summary.get("drive", {}).get("cameras", [])) or sorted(
        methods.get("enhancer", {}).get("per_camera", {}))
    return {"overall": _scope(methods, None), "per_camera": {c: _scope(methods, c) for c in cameras}}


def _scopes(result: Dict[str, object]):
    yield "overall", result["overall"]
    for camera, rows in result["per_camera"].items():
        yield f"camera {camera}", rows


def losses(result: Dict[str, object]) -> List[str]:
    """One sentence per loss against the input or Reinhard (empty when the model loses nowhere)."""
    lines = []
    for scope, rows in _scopes(result):
        for row in rows.values():
            for name, words in (("input", "its input"), ("reinhard", "Reinhard")):
                if row[f"vs_{name}"] == "loss":
                    lines.append(f"LOSS ({scope}): the model is WORSE than {words} on {row['label']} "
                                 f"({_fmt(row['model'])} vs {_fmt(row[name])})")
    return lines


def verdict_lines(result: Dict[str, object]) -> List[str]:
    """Losses first, then one line per scope: which metrics beat the input and Reinhard."""
    lines = losses(result)
    for scope, rows in _scopes(result):
        parts = []
        for name, words in (("input", "input"), ("reinhard", "Reinhard")):
            wins = [r["label"] for r in rows.values() if r[f"vs_{name}"] == "win"]
            lost = [r["label"] for r in rows.values() if r[f"vs_{name}"] == "loss"]
            if wins or lost:
                verdict = "beats" if not lost else ("loses to" if not wins else "is mixed against")
                detail = (f" (better: {', '.join(wins) or 'none'}; worse: {', '.join(lost)})" if lost else
                          f" on {', '.join(wins)}")
                parts.append(f"{verdict} the {words}{detail}")
        if parts:
            lines.append(f"{scope}: the model " + "; ".join(parts))
    return lines


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    return f"{value:.4g}" if abs(value) < 1e-2 else f"{value:,.2f}"
