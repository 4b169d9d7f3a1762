"""Summary pooling, strict-JSON output, plots and the HTML report from hand-made rows."""

import json
import math

import pytest

from simharmon.eval.evaluate import FRAME_FIELDS, EvalResult
from simharmon.eval.plots import write_plots
from simharmon.eval.report import write_report
from simharmon.eval.summary import json_safe, latency_stats, summarize, write_rows_csv, write_summary


def _row(camera, index, method, **values):
    row = {key: None for key in FRAME_FIELDS}
    row.update(camera=camera, index=index, name=f"{index:06d}", method=method, **values)
    return row


def _result():
    rows = [
        _row("a", 0, "enhancer", mse=4.0, psnr=40.0, ssim=0.9, fmse=10.0, bmse=1.0, fg_ratio=0.02, fg_bin="0-5%",
             warp_error=0.5, flicker_mae=2.0, latency_ms=10.0),
        _row("a", 1, "enhancer", mse=2.0, psnr=math.inf, ssim=1.0, fmse=None, bmse=0.0, fg_ratio=0.0, fg_bin=None,
             latency_ms=30.0),
        _row("a", 0, "identity", mse=8.0, psnr=30.0, ssim=0.8, fmse=20.0, bmse=0.0, fg_ratio=0.02, fg_bin="0-5%",
             warp_error=0.0, flicker_mae=4.0),
        _row("a", 1, "identity", mse=6.0, psnr=32.0, ssim=0.8, fmse=30.0, bmse=0.0, fg_ratio=0.2, fg_bin="15-100%"),
        _row("a", 0, "ground_truth", warp_error=0.0, flicker_mae=4.0),
        _row("a", 1, "ground_truth"),
    ]
    return EvalResult(rows=rows, not_computed={"lpips": "not computed: no local LPIPS weights"},
                      flow_source={"a": "drive"}, has_gt={"a": True}, has_mask={"a": True})


def test_summary_pools_like_the_papers():
    summary = summarize(_result(), {"drive": {"name": "d", "cameras": ["a"]}})
    enhancer, identity = summary["methods"]["enhancer"], summary["methods"]["identity"]
    assert enhancer["overall"]["mse"] == 3.0 and math.isinf(enhancer["overall"]["psnr"])
    assert enhancer["overall"]["psnr_inf_frames"] == 1
    assert enhancer["overall"]["fmse"] == 10.0 and enhancer["overall"]["fmse_frames"] == 1  # undefined frame skipped
    assert identity["overall"]["psnr"] == 31.0  # mean of per-frame PSNRs
    assert identity["fg_bins"]["0-5%"]["fmse"] == 20.0 and identity["fg_bins"]["15-100%"]["fmse"] == 30.0
    assert identity["fg_bins"]["5-15%"]["frames"] == 0
    assert enhancer["warp_error"] == 0.5 and enhancer["warp_error_pairs"] == 1
    assert enhancer["vbench_flicker"] == pytest.approx((255 - 2) / 255)
    assert enhancer["latency_ms"]["mean"] == 20.0 and enhancer["latency_ms"]["fps"] == 50.0
    assert "overall" not in summary["methods"]["ground_truth"]
    assert latency_stats([None, None]) is None


def test_outputs_are_strict_json_and_the_report_says_not_computed(tmp_path):
    result = _result()
    summary = summarize(result, {"drive": {"name": "d", "cameras": ["a"], "path": "/x", "kind": "folder", "fps": 10},
                                 "untrained": True})
    write_summary(tmp_path / "summary.json", summary)
    loaded = json.loads((tmp_path / "summary.json").read_text())  # would fail on Infinity
    assert loaded["methods"]["enhancer"]["overall"]["psnr"] == "inf"
    assert json_safe([math.nan, -math.inf]) == ["nan", "-inf"]
    write_rows_csv(tmp_path / "rows.csv", result.rows)
    lines = (tmp_path / "rows.csv").read_text().splitlines()
    assert lines[0] == ",".join(FRAME_FIELDS) and ",inf," in lines[2]
    plots = write_plots(result.rows, tmp_path / "plots")
    assert set(plots) == {"psnr", "fmse", "warping_error", "latency"}
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in plots.values())
    report = write_report(tmp_path / "report.html", summary, plots, {}).read_text()
    assert "not computed: no local LPIPS weights" in report and "Untrained weights" in report
    assert "data:image/png;base64" in report and "static-camera metric" in report
    assert ">nan<" not in report and ">None<" not in report


def test_report_prints_small_warping_errors_in_scientific_notation_with_the_unit(tmp_path):
    result = _result()
    result.rows[0]["warp_error"] = 3.1e-06  # a good output's warping error: 0.000003 in fixed decimals
    summary = summarize(result, {"drive": {"name": "d", "cameras": ["a"]}})
    report = write_report(tmp_path / "report.html", summary, {}, {}).read_text()
    assert "<td>3.10e-06 (1)</td>" in report and "0.000003" not in report
    assert "mean squared difference of [0, 1] intensities" in report
    assert "<td>0 (1)</td>" in report  # the identity's exact 0 stays a plain 0


def test_report_gives_latency_context_and_a_row_after_warm_up(tmp_path):
    summary = summarize(_result(), {"drive": {"name": "d", "cameras": ["a"]}, "latency_context": {
        "device": "cuda:0 (NVIDIA H200)", "torch_threads": 2, "cpu_count": 16,
        "load_avg_1m": {"start": 0.5, "end": 1.25}}})
    enhancer = summary["methods"]["enhancer"]
    assert enhancer["latency_ms"]["count"] == 2 and enhancer["latency_ms_after_warmup"]["count"] == 1
    assert enhancer["latency_ms_after_warmup"]["mean"] == 30.0  # frame 0 (10 ms) is the warm-up
    report = write_report(tmp_path / "report.html", summary, {}, {}).read_text()
    assert "cuda:0 (NVIDIA H200) with 2 torch thread(s)" in report
    assert "0.50 at the start, 1.25 at the end (1-minute load average, 16 CPUs)" in report
    assert "after warm-up (the first 1 frame(s) of each camera left out)" in report and "mean (ms)" in report
    summary.pop("latency_context")
    assert "Measurement conditions were not recorded" in write_report(tmp_path / "r.html", summary, {}, {}).read_text()
def test_verdicts_compare_with_input_and_reinhard_per_camera_and_say_losses(tmp_path):
    from simharmon.eval.verdict import losses, verdict_lines

    result = _result()
    result.rows.append(_row("a", 0, "reinhard", mse=1.0, psnr=45.0, ssim=0.95, fmse=5.0, bmse=0.0, fg_ratio=0.02,
                            fg_bin="0-5%", warp_error=0.1))
    summary = summarize(result, {"drive": {"name": "d", "cameras": ["a"], "path": "/x", "kind": "folder", "fps": 10}})
    overall = summary["verdicts"]["overall"]
    assert overall["fmse"]["vs_input"] == "win" and overall["fmse"]["vs_reinhard"] == "loss"  # 10 vs 25 / vs 5
    assert overall["psnr"]["vs_input"] == "win"  # inf vs 31
    assert overall["warp_error"]["vs_input"] == "loss"  # 0.5 vs 0.0
    assert "lpips" not in overall  # not computed: no verdict
    assert summary["verdicts"]["per_camera"]["a"]["ssim"]["vs_input"] == "win"
    said = losses(summary["verdicts"])
    assert any("WORSE than Reinhard on fMSE (10.00 vs 5.00)" in line for line in said)
    assert any("WORSE than its input on warping error" in line for line in said)
    lines = verdict_lines(summary["verdicts"])
    assert lines[: len(said)] == said and any(line.startswith("camera a: the model") for line in lines)
    write_report(tmp_path / "report.html", summary, {}, {})
    page = (tmp_path / "report.html").read_text()
    top = page.index("Verdict")
    assert top < page.index("Image metrics") and "class='loss'" in page and "WORSE than Reinhard on fMSE" in page
