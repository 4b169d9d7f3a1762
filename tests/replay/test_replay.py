"""``simharmon replay`` end to end: outputs, metrics, report, resume after interruption, errors."""

import json
from pathlib import Path

import numpy as np
import pytest

import simharmon.replay.session as session_module
from simharmon.cli import main
from simharmon.config import load_config
from simharmon.io.drive_mcap import McapDrive
from simharmon.io.frame_sources import open_frame_source
from simharmon.io.log_topics import LogSelection
from tests.fake_engine import FakeEngine
from tests.io.drive_helpers import write_small_drive


@pytest.fixture
def fake(monkeypatch):
    FakeEngine.calls, FakeEngine.interrupt_at = 0, None
    monkeypatch.setattr(session_module, "build_runtime", FakeEngine)
    return FakeEngine


FRAMES = 4


@pytest.fixture
def drive(tmp_path):
    write_small_drive(tmp_path / "drive", num_frames=FRAMES)
    return tmp_path / "drive"


def replay(drive, out, *extra):
    return main(["replay", str(drive), "--out", str(out), "--device", "cpu", "--no-progress", *extra])


def pngs(out):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(Path(out, "cameras").rglob("*.png"))}


def metrics(out):
    """Per-frame rows and summary without the measured latencies (they differ between runs)."""
    rows = json.loads(Path(out, "metrics", "per_frame.json").read_text())
    summary = json.loads(Path(out, "metrics", "summary.json").read_text())
    for row in rows:
        row.pop("latency_ms")
    summary["methods"]["enhancer"].pop("latency_ms")
    summary["methods"]["enhancer"].pop("latency_ms_after_warmup")
    summary.pop("latency_context")  # the machine's load differs too
    return rows, summary


def test_end_to_end_outputs(fake, drive, tmp_path, capsys):
    out = tmp_path / "run"
    assert replay(drive, out, "--config", "tiny") == 0  # a config alone: random weights
    captured = capsys.readouterr()
    assert "UNTRAINED" in captured.err and "report:" in captured.out
    for name in ("replay.json", "report.html", "metrics/per_frame.csv", "metrics/per_frame.json",
                 "metrics/summary.json", "plots/psnr.png", "plots/fmse.png", "plots/warping_error.png",
                 "plots/latency.png", "videos/front_enhanced.mp4", "videos/rear_enhanced.mp4",
                 "videos/side_by_side.mp4", "cameras/front/latency.json"):
        assert (out / name).is_file(), name
    assert len(pngs(out)) == 2 * FRAMES and fake.calls == 2 * FRAMES
    assert not [p for p in out.rglob(".*")], "temporary files left behind"
    record = json.loads((out / "replay.json").read_text())
    assert record["status"] == "complete"
    # Every folder the record names exists (it once named "frames", which replay never writes).
    assert record["frames_dirs"] == {"front": "cameras/front/enhanced", "rear": "cameras/rear/enhanced"}
    assert "frames_dir" not in record and all((out / d).is_dir() for d in record["frames_dirs"].values())
    assert len(open_frame_source(out / "videos" / "side_by_side.mp4")) == FRAMES
    rows, summary = metrics(out)
    assert len(rows) == 2 * FRAMES * 4  # cameras x frames x (enhancer, identity, reinhard, ground truth)
    methods = summary["methods"]
    assert set(methods) == {"enhancer", "identity", "reinhard", "ground_truth"}
    assert summary["flow_source"] == {"front": "drive", "rear": "drive"}
    assert methods["ground_truth"]["warp_error"] == 0.0 and methods["identity"]["warp_error"] == 0.0
    assert methods["identity"]["overall"]["fmse"] > methods["reinhard"]["overall"]["fmse"] > 0
    assert methods["enhancer"]["overall"]["lpips"] is None and "lpips" in summary["not_computed"]
    report = (out / "report.html").read_text()
    assert "not computed" in report and "static-camera metric" in report and "data:video/mp4;base64" in report
    assert "Untrained weights" in report
    context = json.loads((out / "metrics" / "summary.json").read_text())["latency_context"]
    assert context["device"] == "cpu" and context["torch_threads"] >= 1 and set(context["load_avg_1m"]) == {"start", "end"}
    assert f"Measured on cpu with {context['torch_threads']} torch thread(s)" in report
    csv_lines = (out / "metrics" / "per_frame.csv").read_text().splitlines()
    assert csv_lines[0].startswith("camera,index,name,method,mse,psnr") and len(csv_lines) == 1 + 2 * FRAMES * 4


def test_interrupted_replay_resumes_to_the_same_result(fake, drive, tmp_path, capsys):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert replay(drive, full) == 0
    fake.calls, fake.interrupt_at = 0, 6  # Ctrl-C during the 6th step (front and rear interleaved)
    assert replay(drive, resumed) == 130
    assert json.loads((resumed / "replay.json").read_text())["status"] == "interrupted"
    assert len(pngs(resumed)) == 5 and not [p for p in resumed.rglob(".*")]
    # A hard kill can leave a temporary file and lose the latency log: neither may matter.
    (resumed / "cameras" / "rear" / "enhanced" / ".000002.dead.tmp.png").write_bytes(b"half")
    (resumed / "cameras" / "rear" / "latency.json").unlink()
    fake.interrupt_at = None
    capsys.readouterr()
    assert replay(drive, resumed) == 0
    err = capsys.readouterr().err
    assert "resuming camera front: 3 of 4" in err and "resuming camera rear: 2 of 4" in err
    assert pngs(resumed) == pngs(full)
    assert metrics(resumed) == metrics(full)
    assert not [p for p in resumed.rglob(".*")]


def test_max_frames_then_full_run_with_the_real_tiny_model(drive, tmp_path):
    import dataclasses

    from simharmon.config import save_config

    # History "partial" conditions on the outputs as soon as one exists, so the resumed frames
    # depend on the history primed from disk.
    config = load_config("tiny")
    save_config(config.replace(stream=dataclasses.replace(config.stream, history="partial")), tmp_path / "tiny.yaml")
    args = ("--config", str(tmp_path / "tiny.yaml"), "--camera", "front")
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert replay(drive, full, *args) == 0
    assert replay(drive, resumed, *args, "--max-frames", "2") == 0
    assert json.loads((resumed / "replay.json").read_text())["status"] == "partial"
    assert len(pngs(resumed)) == 2
    assert replay(drive, resumed, *args) == 0
    assert pngs(resumed) == pngs(full) and len(pngs(full)) == FRAMES
    assert metrics(resumed) == metrics(full)
    latency = json.loads((full / "metrics" / "summary.json").read_text())["methods"]["enhancer"]["latency_ms"]
    assert latency["count"] == FRAMES and latency["mean"] > 0


def test_refuses_another_run_and_overwrites_on_request(fake, drive, tmp_path, capsys):
    out = tmp_path / "run"
    assert replay(drive, out, "--max-frames", "1", "--camera", "front") == 0
    other = tmp_path / "other"
    write_small_drive(other, num_frames=2, cameras=("front",))
    capsys.readouterr()
    assert replay(other, out) == 1
    err = capsys.readouterr().err
    assert "different run" in err and "--overwrite" in err
    assert replay(other, out, "--overwrite") == 0
    assert len(pngs(out)) == 2


def test_flow_from_depth_and_poses_or_not_computed(fake, tmp_path):
    write_small_drive(tmp_path / "depth", num_frames=2, layers=("gt", "masks", "depth", "poses"))
    assert replay(tmp_path / "depth", tmp_path / "run1") == 0
    summary = json.loads((tmp_path / "run1" / "metrics" / "summary.json").read_text())
    assert summary["flow_source"]["front"] == "depth+poses"
    assert summary["methods"]["ground_truth"]["warp_error"] < 1e-12
    write_small_drive(tmp_path / "bare", num_frames=2, layers=())
    assert replay(tmp_path / "bare", tmp_path / "run2", "--camera", "rear") == 0
    summary = json.loads((tmp_path / "run2" / "metrics" / "summary.json").read_text())
    assert summary["methods"]["enhancer"]["warp_error"] is None and "warp_error" in summary["not_computed"]
    assert "image_metrics" in summary["not_computed"] and list(summary["flow_source"]) == ["rear"]
    assert "no ground-truth" in (tmp_path / "run2" / "report.html").read_text()


def test_mcap_export(fake, drive, tmp_path):
    assert replay(drive, tmp_path / "run", "--max-frames", "2", "--mcap") == 0
    exported = McapDrive(tmp_path / "run" / "enhanced.mcap")
    assert exported.cameras == ["front", "rear"] and exported.frame_count("front") == FRAMES
    assert exported.timestamps_ns("front") == [round(i * 1e9 / 10.0) for i in range(FRAMES)]  # index / fps
    enhanced = McapDrive(tmp_path / "run" / "enhanced.mcap", selection=LogSelection(topics=("/front/image/enhanced",)))
    assert enhanced.frame_count(enhanced.cameras[0]) == 2
    assert enhanced.timestamps_ns(enhanced.cameras[0]) == exported.timestamps_ns("front")[:2]
    first = open_frame_source(tmp_path / "run" / "cameras" / "front" / "enhanced").read(0)
    assert np.array_equal(enhanced.read_frame(enhanced.cameras[0], 0), first)


@pytest.mark.parametrize("args, message", [
    (lambda d, t: [str(t / "missing"), "--out", str(t / "o")], "drive not found"),
    (lambda d, t: [str(d), "--out", str(t / "o"), "--camera", "side"], "no camera 'side'"),
    (lambda d, t: [str(d), "--out", str(t / "o"), "--raft-weights", str(t / "raft.pth")], "RAFT"),
    (lambda d, t: [str(d), "--out", str(t / "o"), "--lpips-heads", str(t / "h.pth")], "LPIPS needs both"),
])
def test_errors_are_one_line(fake, drive, tmp_path, capsys, args, message):
    assert main(["replay", *args(drive, tmp_path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("simharmon replay: error:") and message in err and "Traceback" not in err


def test_unsupported_frame_size_names_camera_and_frame(tmp_path, capsys):
    from simharmon.io.drive import CameraInfo
    from simharmon.io.drive_folder import DriveFolderWriter

    writer = DriveFolderWriter(tmp_path / "odd", "odd", 10.0, [CameraInfo("cam", 40, 24)])
    writer.write_frame("cam", 0, np.zeros((24, 40, 3), np.uint8))
    writer.finish(1)
    assert replay(tmp_path / "odd", tmp_path / "o", "--config", "tiny") == 1
    err = capsys.readouterr().err
    assert "camera 'cam'" in err and "000000" in err and "multiples of" in err


def test_help_lists_the_replay_options():
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", "simharmon", "replay", "--help"], cwd=repo, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0
    for option in ("--out", "--weights", "--raft-weights", "--lpips-backbone", "--dino-weights", "--mcap", "--camera"):
        assert option in result.stdout


@pytest.mark.slow
def test_hard_killed_replay_resumes_to_the_same_result(tmp_path):
    """SIGKILL a real ``simharmon replay`` process mid-run, re-run it, and compare with an uninterrupted run."""
    import dataclasses
    import signal
    import subprocess
    import sys
    import time

    from simharmon.config import save_config

    write_small_drive(tmp_path / "drive", cameras=("front",), num_frames=4)
    config = load_config("tiny")
    save_config(config.replace(stream=dataclasses.replace(config.stream, history="partial")), tmp_path / "tiny.yaml")
    repo = Path(__file__).resolve().parents[2]

    def command(out):
        return [sys.executable, "-m", "simharmon", "replay", str(tmp_path / "drive"), "--out", str(out),
                "--config", str(tmp_path / "tiny.yaml"), "--device", "cpu", "--no-progress"]

    killed = tmp_path / "killed"
    process = subprocess.Popen(command(killed), cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if len(list((killed / "cameras" / "front" / "enhanced").glob("*.png"))) >= 1:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait(timeout=60)
    assert subprocess.run(command(killed), cwd=repo, capture_output=True, timeout=300).returncode == 0
    assert main(command(tmp_path / "full")[3:]) == 0  # the uninterrupted reference, in this process
    assert pngs(killed) == pngs(tmp_path / "full") and len(pngs(killed)) == 4
    assert metrics(killed) == metrics(tmp_path / "full")
    assert not [p for p in killed.rglob(".*")]
