"""``simharmon enhance`` end to end: outputs, resume, errors, video, warnings.

Most tests run twice: with the real tiny enhancer from the runtime factory ("real") and with a small
fake engine of the same interface ("fake", fast, and able to simulate a Ctrl-C mid-run).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import simharmon.replay.session as session_module
from simharmon.cli import main
from simharmon.data.sample import make_sample_frames
from simharmon.io.atomic import atomic_save_png
from simharmon.io.frame_sources import open_frame_source
from tests.fake_engine import FakeEngine

REPO = Path(__file__).resolve().parents[1]
NUM_FRAMES, WIDTH, HEIGHT = 6, 64, 48


@pytest.fixture(params=["fake", "real"])
def backend(request, monkeypatch):
    if request.param == "fake":
        FakeEngine.calls, FakeEngine.interrupt_at = 0, None
        monkeypatch.setattr(session_module, "build_runtime", FakeEngine)
    return request.param


@pytest.fixture
def fake(monkeypatch):
    FakeEngine.calls, FakeEngine.interrupt_at = 0, None
    monkeypatch.setattr(session_module, "build_runtime", FakeEngine)
    return FakeEngine


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def frames_dir(tmp_path):
    folder = tmp_path / "input"
    for index, image in enumerate(make_sample_frames(num_frames=NUM_FRAMES, width=WIDTH, height=HEIGHT)):
        atomic_save_png(folder / f"shot{index + 1}.png", image)  # shot1..shot6: natural order matters
    return folder


def enhance(input_path, out, *extra):
    return main(["enhance", str(input_path), "--out", str(out), "--device", "cpu", "--no-progress", *extra])


def png_bytes(out):
    return {p.name: p.read_bytes() for p in sorted((Path(out) / "frames").glob("*.png"))}


def run_json(out):
    return json.loads((Path(out) / "run.json").read_text())


# -- tests --------------------------------------------------------------------------------------


def test_end_to_end_with_mp4_and_warning(backend, frames_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert enhance(frames_dir, out, "--mp4", "--config", "tiny") == 0  # a config alone: random weights
    captured = capsys.readouterr()
    assert "UNTRAINED" in captured.err and "NOT meaningful" in captured.err
    outputs = png_bytes(out)
    assert list(outputs) == [f"shot{i}.png" for i in range(1, NUM_FRAMES + 1)]
    first = open_frame_source(out / "frames").read(0)
    assert first.shape == (HEIGHT, WIDTH, 3)
    record = run_json(out)
    assert record["status"] == "complete" and record["completed"] == NUM_FRAMES == record["frame_count"]
    assert record["weights"] == "untrained" and record["config"]["name"] == "tiny"
    assert record["input"] == str(frames_dir.resolve()) and record["mp4"] == "enhanced.mp4"
    assert record["frames_dir"] == "frames" and (out / record["frames_dir"]).is_dir()
    video = open_frame_source(out / "enhanced.mp4")
    assert len(video) == NUM_FRAMES and video.read(0).shape == (HEIGHT, WIDTH, 3)
    assert not [p for p in out.rglob(".*")], "temporary files left behind"


def test_resume_after_max_frames_is_byte_identical(backend, frames_dir, tmp_path, capsys):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert enhance(frames_dir, full) == 0
    assert enhance(frames_dir, resumed, "--max-frames", "3") == 0
    assert len(png_bytes(resumed)) == 3
    assert run_json(resumed)["completed"] == 3 and run_json(resumed)["status"] == "partial"
    capsys.readouterr()
    assert enhance(frames_dir, resumed) == 0
    assert "resuming: 3 of 6" in capsys.readouterr().err
    assert png_bytes(resumed) == png_bytes(full)
    assert run_json(resumed)["completed"] == NUM_FRAMES


def test_resume_after_ctrl_c_is_byte_identical(fake, frames_dir, tmp_path, capsys):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert enhance(frames_dir, full) == 0
    fake.calls, fake.interrupt_at = 0, 5  # Ctrl-C while enhancing the 5th frame
    assert enhance(frames_dir, resumed) == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(png_bytes(resumed)) == ["shot1.png", "shot2.png", "shot3.png", "shot4.png"]
    assert run_json(resumed)["status"] == "interrupted" and run_json(resumed)["completed"] == 4
    assert not [p for p in resumed.rglob(".*")]
    fake.interrupt_at = None
    assert enhance(frames_dir, resumed) == 0
    assert png_bytes(resumed) == png_bytes(full)


def test_resume_only_uses_contiguous_prefix(fake, frames_dir, tmp_path):
    out = tmp_path / "out"
    assert enhance(frames_dir, out) == 0
    reference = png_bytes(out)
    (out / "frames" / "shot3.png").unlink()
    fake.calls = 0
    assert enhance(frames_dir, out) == 0
    assert fake.calls == 4  # shot3..shot6 re-enhanced
    assert png_bytes(out) == reference


def test_rerun_of_a_finished_run_does_nothing(fake, frames_dir, tmp_path):
    out = tmp_path / "out"
    assert enhance(frames_dir, out) == 0
    reference = png_bytes(out)
    for extra in ((), ("--max-frames", "2", "--mp4")):
        fake.calls = 0
        assert enhance(frames_dir, out, *extra) == 0
        assert fake.calls == 0 and png_bytes(out) == reference
        assert run_json(out)["completed"] == NUM_FRAMES and run_json(out)["status"] == "complete"
    assert len(open_frame_source(out / "enhanced.mp4")) == 2


def test_nontemporal_differs_and_refuses_mixing(fake, frames_dir, tmp_path, capsys):
    temporal, flat = tmp_path / "temporal", tmp_path / "flat"
    assert enhance(frames_dir, temporal) == 0
    assert enhance(frames_dir, flat, "--nontemporal") == 0
    assert run_json(flat)["config"]["stream"]["history"] == "none"
    assert png_bytes(flat) != png_bytes(temporal)
    capsys.readouterr()
    assert enhance(frames_dir, temporal, "--nontemporal") == 1
    err = capsys.readouterr().err
    assert "different run" in err and "stream.history" in err and "--overwrite" in err
    assert enhance(frames_dir, temporal, "--nontemporal", "--overwrite") == 0
    assert png_bytes(temporal) == png_bytes(flat)


def test_refuses_other_input(fake, frames_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert enhance(frames_dir, out, "--max-frames", "2") == 0
    other = tmp_path / "other"
    other.mkdir()
    for name in ("shot1.png", "shot2.png"):
        (other / name).write_bytes((frames_dir / name).read_bytes())
    assert enhance(other, out) == 1
    assert "input:" in capsys.readouterr().err


def test_refuses_unrecorded_outputs(fake, frames_dir, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "frames").mkdir(parents=True)
    (out / "frames" / "shot1.png").write_bytes(b"someone else's file")
    assert enhance(frames_dir, out) == 1
    assert "no run.json" in capsys.readouterr().err


def test_mixed_resolutions_name_the_frame(fake, frames_dir, tmp_path, capsys):
    atomic_save_png(frames_dir / "shot4.png", np.zeros((32, 64, 3), np.uint8))
    out = tmp_path / "out"
    assert enhance(frames_dir, out) == 1
    err = capsys.readouterr().err
    assert "'shot4'" in err and "64x32" in err and "64x48" in err
    assert sorted(png_bytes(out)) == ["shot1.png", "shot2.png", "shot3.png"]
    assert run_json(out)["status"] == "failed"


def test_unsupported_size_names_the_frame(backend, tmp_path, capsys):
    if backend == "fake":
        pytest.skip("the size rule is the real engine's")
    folder = tmp_path / "input"
    atomic_save_png(folder / "odd.png", np.zeros((40, 40, 3), np.uint8))
    assert enhance(folder, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "'odd'" in err and "40x40" in err


def test_video_input(fake, frames_dir, tmp_path):
    from simharmon.io.video import write_mp4

    video = tmp_path / "clip.mp4"
    write_mp4(video, [img for _, _, img in open_frame_source(frames_dir)], fps=25)
    out = tmp_path / "out"
    assert enhance(video, out, "--max-frames", "4", "--mp4") == 0
    assert sorted(png_bytes(out)) == [f"frame_{i:06d}.png" for i in range(4)]
    assert run_json(out)["input_kind"] == "video" and run_json(out)["fps"] == 25
    assert len(open_frame_source(out / "enhanced.mp4")) == 4


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: d / "missing", "input not found"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "no .png/.jpg/.jpeg frames in"),
        (lambda d: (d / "x.gif").write_bytes(b"GIF89a") and d / "x.gif", "unsupported input file type '.gif'"),
    ],
)
def test_input_errors(fake, tmp_path, capsys, setup, message):
    assert enhance(setup(tmp_path), tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert err.startswith("simharmon enhance: error:") and message in err
    assert "Traceback" not in err


def test_corrupt_frame_names_the_file(fake, frames_dir, tmp_path, capsys):
    (frames_dir / "shot2.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    assert enhance(frames_dir, tmp_path / "out") == 1
    assert "shot2.png" in capsys.readouterr().err


def test_missing_weights_and_bad_config(fake, frames_dir, tmp_path, capsys):
    assert enhance(frames_dir, tmp_path / "out", "--weights", str(tmp_path / "w.pt")) == 1
    assert "weights file not found" in capsys.readouterr().err
    assert enhance(frames_dir, tmp_path / "out", "--config", "nosuchpreset") == 1
    assert "nosuchpreset" in capsys.readouterr().err


def test_weights_suppress_warning_and_are_recorded(fake, frames_dir, tmp_path, capsys):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"fake")
    out = tmp_path / "out"
    assert enhance(frames_dir, out, "--weights", str(weights), "--max-frames", "1") == 0
    assert "UNTRAINED" not in capsys.readouterr().err
    assert run_json(out)["weights"] == str(weights.resolve())


def test_cuda_request_without_cuda(fake, frames_dir, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["enhance", str(frames_dir), "--out", str(tmp_path / "o"), "--device", "cuda"]) == 1
    assert "CUDA is not available" in capsys.readouterr().err


def test_usage_errors(capsys):
    assert main([]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["enhance", "x", "--out", "y", "--max-frames", "0"])
    assert exc.value.code == 2
    assert "positive integer" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "simharmon", "enhance", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--max-frames" in result.stdout and "--nontemporal" in result.stdout


def test_no_weights_and_no_config_uses_the_bundled_model(frames_dir, tmp_path, capsys):  # the real backend
    from simharmon.models.bundled import BUNDLED_NAME, BUNDLED_WEIGHTS

    assert enhance(frames_dir, tmp_path / "out") == 0
    captured = capsys.readouterr()
    assert "UNTRAINED" not in captured.err and "using the bundled default model" in captured.err
    assert "passes through unchanged" in captured.err  # it reads actor masks; this input has none
    record = run_json(tmp_path / "out")
    assert record["weights"] == str(BUNDLED_WEIGHTS.resolve()) and record["config"]["name"] == BUNDLED_NAME
