"""benchmarks/kernels.py --smoke runs on the CPU (the reference path) and reports every field."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "kernels.py"


def test_smoke_run(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_kernels", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    out = tmp_path / "smoke.json"
    report = module.main(["--smoke", "--only", "latents", "pack", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    names = [row["name"] for row in report["cases"]]
    assert "pack bgra->model" in names and "mean_shift latents" in names and len(names) == 7
    assert not report["kernels_used"] and report["smoke"]
    for row in report["cases"]:
        assert row["max_abs_diff_vs_eager"] == 0  # on the CPU both sides are the reference
        assert row["kernel_ms"] > 0 and row["bytes"] > 0 and row["pct_of_copy"] > 0
