"""benchmarks/kernel_errors.py, one seed per case on the host build: every kernel and dtype measured."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks import kernel_errors
from simharmon.ops import _host

pytestmark = pytest.mark.skipif(not _host.host_kernels_available() and os.environ.get("CI") != "true",
                                reason="no C++ compiler for the host build of the kernels")


def test_one_repeat_on_the_host(tmp_path):
    out = tmp_path / "errors.json"
    report = kernel_errors.main(["--device", "cpu", "--repeats", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == report
    keys = set(report["worst_ratio_vs_torch"])
    for op in ("warp", "reproject_warp", "masked_blend", "mean_shift", "temporal_blend", "pack"):
        assert {f"{op} float32", f"{op} float16", f"{op} bfloat16"} <= keys
    assert "reproject float32" in keys
    assert all(0 <= r <= 2 for r in report["worst_ratio_vs_torch"].values())  # the tests' tolerance
    assert set(report["mean_shift_vs_reference_in_roundings"]) == {"float32", "float16", "bfloat16"}
