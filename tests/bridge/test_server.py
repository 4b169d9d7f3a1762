"""Round trips through a real server over tcp and ipc, with the Python client."""

import re
import runpy
import sys
import time

import numpy as np
import pytest
from bridge_helpers import REPO, rgb8, running_server

from simharmon.bridge.client import BridgeClient, BridgeError
from simharmon.bridge.config import ClientConfig
from simharmon.bridge.processor import IdentityStandIn
from simharmon.models.enhancer import build_enhancer
from simharmon.runtime.engine import StepResult
from simharmon.runtime.factory import build_runtime, engine_for
from simharmon.runtime.stream import StreamingEnhancer


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_round_trip_identity(transport, ipc_dir):
    bind = ("tcp://127.0.0.1:*",) if transport == "tcp" else (f"ipc://{ipc_dir}/s.sock",)
    with running_server(bind=bind) as server:
        with BridgeClient(ClientConfig(server.endpoints[0], timeout_s=5)) as client:
            welcome = client.hello()
            assert welcome["stand_in"] is True and welcome["pixel_multiple"] == 16
            for index in range(3):
                image = rgb8(seed=index)
                reply = client.enhance(image, camera="front", frame_index=10 + index, timestamp_us=-7)
                assert reply.ok and reply.frame_index == 10 + index and reply.header["timestamp_us"] == -7
                assert reply.header["format"] == "rgb8" and np.array_equal(reply.image, image)
            assert client.heartbeat() < 5
            stats = client.stats()
            assert stats["counts"]["frames_out"] == 3 and stats["client"][0]["camera"] == "front"


def test_formats_layers_and_reply_formats():
    rng = np.random.default_rng(0)
    with running_server() as server, BridgeClient(ClientConfig(server.endpoints[0], timeout_s=5)) as client:
        bgra = rng.integers(0, 256, (16, 32, 4), dtype=np.uint8)
        reply = client.enhance(bgra, format="bgra8", camera="bgra", mask=np.ones((16, 32), np.uint8),
                               depth=rng.random((16, 32), dtype=np.float32),
                               flow=np.zeros((16, 32, 2), np.float32), intrinsics=[20, 20, 16, 8], pose=np.eye(4))
        assert np.array_equal(reply.image, bgra)  # alpha passes through
        reply = client.enhance(bgra, format="bgra8", camera="bgra", reply_format="rgb8")
        assert np.array_equal(reply.image, bgra[..., [2, 1, 0]])
        half = rng.random((16, 32, 3)).astype(np.float16)
        reply = client.enhance(half, camera="half", reply_format="rgb32f")
        assert reply.image.dtype == np.float32 and np.array_equal(reply.image, half.astype(np.float32))
        reply = client.enhance(half, camera="half", reply_format="rgba8")
        assert np.array_equal(reply.image[..., :3], np.floor(half.astype(np.float32) * 255 + 0.5).astype(np.uint8))
        assert (reply.image[..., 3] == 255).all()


def test_errors_come_back_as_replies_and_streams_keep_working():
    with running_server(max_streams=2) as server, BridgeClient(ClientConfig(server.endpoints[0], timeout_s=5)) as c:
        with pytest.raises(BridgeError) as info:
            c.enhance(rgb8(16, 40))
        assert info.value.code == "UNSUPPORTED_SIZE" and "multiples of 16" in info.value.message
        c.enhance(rgb8(), camera="a")
        with pytest.raises(BridgeError) as info:
            c.enhance(rgb8(32, 32), camera="a")
        assert info.value.code == "STREAM_SIZE_CHANGED"
        assert c.enhance(rgb8(32, 32), camera="a", reset=True).image.shape == (32, 32, 3)
        c.enhance(rgb8(), camera="b")
        with pytest.raises(BridgeError) as info:
            c.enhance(rgb8(), camera="c")
        assert info.value.code == "TOO_MANY_STREAMS"
        c.bye("b")  # frees a slot
        assert c.enhance(rgb8(), camera="c").ok
        c.reset("c")
        bad = np.full((16, 32, 3), np.inf, np.float32)
        with pytest.raises(BridgeError) as info:
            c.enhance(bad, camera="c", reset=True)
        assert info.value.code == "BAD_PIXELS"
        with pytest.raises(ValueError, match="dtype"):
            c.submit(rgb8().astype(np.int16), format="rgb8")


def test_streams_of_one_size_are_batched():
    engine = IdentityStandIn(delay_s=0.2)  # slow enough that four frames queue up behind the first
    with running_server(engine) as server, BridgeClient(ClientConfig(server.endpoints[0], timeout_s=5)) as client:
        client.enhance(rgb8(), camera="warmup")
        for cam in range(4):
            client.submit(rgb8(seed=cam), camera=f"cam{cam}")
        replies = list(client.results())
        assert sorted(r.camera for r in replies) == [f"cam{i}" for i in range(4)] and all(r.ok for r in replies)
        assert max(engine.batch_sizes) >= 3 and max(r.header["batch"] for r in replies) >= 3


@pytest.fixture(scope="module")
def tiny_model():
    return build_enhancer("tiny", seed=3)


def test_round_trip_with_the_real_tiny_model(tiny_model):
    """The real enhancer behind the bridge gives what it gives in process (rgb8, 64x48, 2 frames)."""
    frames = [rgb8(48, 64, seed=s) for s in range(2)]
    engine = engine_for(tiny_model)
    reference = StreamingEnhancer(engine.model)
    expected = [reference.step_uint8(f).numpy() for f in frames]
    assert engine.untrained and not engine.stand_in
    with running_server(engine) as server, BridgeClient(ClientConfig(server.endpoints[0], timeout_s=60)) as client:
        assert client.hello()["untrained"] is True
        for image, want in zip(frames, expected):
            got = client.enhance(image, camera="cam").image
            assert not np.array_equal(got, image)  # the model did something
            np.testing.assert_array_equal(got, want)  # one stream: bit-identical to the in-process step


@pytest.fixture(scope="module")
def bundled_engine():
    return build_runtime()  # what `simharmon serve` runs without flags: the bundled default model


def run_example(server, monkeypatch, capsys, *extra):
    monkeypatch.setattr(sys, "argv", ["bridge_client.py", "--endpoint", server.endpoints[0], "--ticks", "2", *extra])
    runpy.run_path(str(REPO / "examples" / "bridge_client.py"), run_name="__main__")
    return capsys.readouterr().out


def test_bridge_client_example_gets_enhanced_frames_from_the_default_server(bundled_engine, monkeypatch, capsys):
    """The README's pair: `simharmon serve` (bundled model) + examples/bridge_client.py (sends masks)."""
    with running_server(bundled_engine) as server:
        out = run_example(server, monkeypatch, capsys)
        lines = [line for line in out.splitlines() if line.startswith("tick ")]
        assert len(lines) == 4 and "server: 4 frames out" in out and "reads ['mask']" in out
        for line in lines:  # the actor is harmonized; everything else is the input, bit for bit
            actor = float(re.search(r"actor ([0-9.]+)", line).group(1))
            assert actor > 0.5 and "background 0.00 levels" in line and "no_mask" not in line, line
        passed = run_example(server, monkeypatch, capsys, "--no-mask")
        assert passed.count("(no_mask: unchanged)") == 4 and "actor 0.00" in passed


def test_bridge_client_example_prints_the_error_message(monkeypatch, capsys):
    with running_server() as server:
        monkeypatch.setattr(sys, "argv", ["bridge_client.py", "--endpoint", server.endpoints[0], "--ticks", "1",
                                          "--size", "40x40"])
        runpy.run_path(str(REPO / "examples" / "bridge_client.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "tick 0 cam0: error UNSUPPORTED_SIZE: frame size 40x40 (WxH) is not supported" in out, out


class FlakyEngine(IdentityStandIn):
    """Refuses frames of cameras named "bad*" (like an input check) and crashes on "boom"."""

    def step_many(self, frames, inputs=None):
        if any(key.startswith("s/boom") for key in frames):
            raise RuntimeError("device lost")
        results = super().step_many(frames, inputs)
        for key in frames:
            if key.startswith("s/bad"):
                results[key] = StepResult(error=f"stream {key!r}: refused")
        return results


def test_engine_failures_are_isolated_and_reported():
    engine = FlakyEngine()
    with running_server(engine, max_batch=8) as server:
        with BridgeClient(ClientConfig(server.endpoints[0], sim="s", timeout_s=5)) as client:
            client.enhance(rgb8(), camera="warm")
            engine.delay_s = 0.3
            client.submit(rgb8(), camera="warm")  # keeps the engine busy while the next two queue up
            time.sleep(0.1)
            client.submit(rgb8(), camera="good")
            client.submit(rgb8(), camera="bad")
            replies = {r.camera: r for r in client.results()}
            engine.delay_s = 0.0
            assert replies["good"].ok and replies["good"].header["batch"] == 2  # same batch as "bad"
            assert replies["bad"].code == "ENGINE_ERROR" and "refused" in replies["bad"].message
            with pytest.raises(BridgeError, match="ENGINE_ERROR.*device lost.*restarts"):
                client.enhance(rgb8(), camera="boom")
            assert client.enhance(rgb8(), camera="good").ok  # still serving
