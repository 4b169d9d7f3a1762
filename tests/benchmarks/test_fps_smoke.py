"""benchmarks/fps.py --smoke: the whole benchmark on the tiny config, on the CPU, in seconds."""

from __future__ import annotations

import json

import pytest

from benchmarks import fps


def test_smoke_run_writes_a_marked_report(tmp_path):
    out = tmp_path / "smoke.json"
    report = fps.main(["--smoke", "--frames", "2", "--stage-iters", "1", "--check-frames", "6",
                       "--cases", "release_loop,plain,exact,cameras", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["smoke"] is True and "NOT a performance result" in saved["note"]
    assert saved["environment"]["torch"] and saved["environment"]["commit"]
    assert set(saved["cases"]) == {"release_loop", "plain_eager", "exact_eager", "cameras2_eager"}
    for case in saved["cases"].values():
        assert case["latency_ms"]["count"] == 2
        assert case["latency_ms"]["p50"] <= case["latency_ms"]["p99"]
        assert case["tflop_per_step"] > 0 and case["fps_per_camera"] > 0
        assert {"encode", "dit", "decode"} <= {k.replace("_eager", "") for k in case["stages_ms"]}
    # The optimized step does fewer FLOPs than the release loop; 2 cameras do twice one camera's.
    cases = saved["cases"]
    assert cases["exact_eager"]["tflop_per_step"] < cases["release_loop"]["tflop_per_step"]
    assert cases["cameras2_eager"]["tflop_per_step"] == pytest.approx(2 * cases["exact_eager"]["tflop_per_step"])
    # Same frames and history: the plain engine equals the release loop; the exact one is within 1 level.
    assert saved["drift_vs_release_loop"]["plain_eager"]["max_level_diff"] == 0
    assert saved["drift_vs_release_loop"]["exact_eager"]["max_level_diff"] <= 1
    assert set(saved["targets"]) >= {"exact_p50_ms", "speedup_vs_release", "cameras_fps_each"}
    assert saved["skipped"] == {} and report["cases"].keys() == saved["cases"].keys()
    # Reports of separate runs (one per device command) combine into one file, targets recomputed.
    combined = fps.main(["--combine", str(out), str(out), "--out", str(tmp_path / "all.json"), "--best", "eager"])
    assert combined["cases"].keys() == saved["cases"].keys() and len(combined["runs"]) == 2
    assert combined["targets"]["speedup_vs_release"]["same_run"] is True
