"""benchmarks/gpu_check.py on the CPU: each GPU step is SKIPPED for lack of a GPU and its CPU stand-in
runs; one JSON and one log are written and their paths printed; a wrong result stops the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import fps, gpu_check

without_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")


def report_of(out: Path) -> dict:
    (path,) = out.glob("gpu-check-*.json")
    assert len(list(out.glob("gpu-check-*.log"))) == 1
    return json.loads(path.read_text())


@without_gpu
@pytest.mark.slow
def test_cpu_run_skips_every_gpu_step_and_runs_the_stand_ins(tmp_path, capsys):
    code = gpu_check.main(["--quick", "--out", str(tmp_path), "--tests", "tests/ops/test_kernels_gpu.py"])
    printed = capsys.readouterr().out
    report = report_of(tmp_path)
    assert code == 0 and report["ok"] is True and report["environment"]["cuda"] is False
    assert [s["name"] for s in report["steps"]] == ["gpu_tests", "kernels", "fps"]
    assert report["skipped_for_lack_of_gpu"] == ["gpu_tests", "kernels", "fps"]
    for step in report["steps"]:
        assert step["status"] == "skipped" and "no CUDA device" in step["reason"], step["name"]
        assert step["standin"]["status"] == "passed" and step["problems"] == [], step["name"]
    tests, kernels, fps = (s["result"] for s in report["steps"])
    assert tests["counts"]["skipped"] == len(tests["tests"]) > 0 and tests["counts"]["passed"] == 0
    assert kernels["smoke"] is True and kernels["kernels_used"] is False and kernels["cases"]
    assert fps["smoke"] is True and {"release_loop", "exact_eager", "per_frame_eager"} <= set(fps["cases"])
    assert "NO CUDA DEVICE" in printed and "skipped for lack of a GPU: gpu_tests, kernels, fps" in printed
    assert f"wrote {report['json']}" in printed and f"log: {report['log']}" in printed
    assert "benchmarks/fps.py --smoke" in Path(report["log"]).read_text()


@without_gpu
def test_a_wrong_result_stops_the_run(tmp_path, capsys):
    wrong = tmp_path / "test_wrong_on_purpose.py"
    wrong.write_text("import pytest\n\n\n@pytest.mark.gpu\ndef test_wrong():\n    assert 1 + 1 == 3\n")
    out = tmp_path / "out"
    code = gpu_check.main(["--quick", "--out", str(out), "--tests", str(wrong)])
    printed = capsys.readouterr().out
    report = report_of(out)
    assert code == 1 and report["ok"] is False
    (step,) = report["steps"]  # kernels and fps never ran
    assert step["name"] == "gpu_tests" and step["standin"]["status"] == "failed"
    assert any("test_wrong" in p for p in step["problems"])
    assert step["result"]["tests"][0]["outcome"] == "failed"
    assert "STOPPING at the first wrong result" in printed and "FAILED: wrote" in printed


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_the_gpu_commands_parse_as_the_issue_asks(mode, tmp_path):
    """What a GPU run would execute: valid arguments of fps.py, cosmos-0.6b at 1024x576, K = 4, the
    three cases side by side, >= 200 timed frames in the full run."""
    gpu, cpu = gpu_check.fps_commands(mode, tmp_path / "fps.json")
    assert gpu[1] == cpu[1] == "benchmarks/fps.py"
    args = fps.parse_args(gpu[2:])
    assert (args.config, args.width, args.height, args.device, args.dtype) == ("cosmos-0.6b", 1024, 576, "cuda",
                                                                                "bfloat16")
    assert args.cases.split(",") == ["release_loop", "exact", "per_frame"] and args.best == args.backends
    assert args.frames >= (200 if mode == "full" else 100)
    assert fps.parse_args(cpu[2:]).smoke
    gpu, cpu = gpu_check.kernels_commands(mode, tmp_path / "kernels.json")
    assert gpu[1] == cpu[1] == "benchmarks/kernels.py" and "--smoke" in cpu and "--smoke" not in gpu
    limits = gpu_check.LIMITS[mode]
    assert sum(limits.values()) <= (420 if mode == "full" else 210)  # + set-up: within 8 / 4 minutes
