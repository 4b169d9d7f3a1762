"""Shared-memory transport (docs/PROTOCOL.md §9) with the Python client: round trips bit-exact
against the inline path, pipelining, result views, refusal and fallback, lost segments, cleanup."""

import gc
import os
import time

import numpy as np
import pytest
import zmq
from bridge_helpers import rgb8, running_server
from test_resilience import free_port

from simharmon.bridge.client import BridgeClient, BridgeTimeout
from simharmon.bridge.config import ClientConfig
from simharmon.bridge.processor import IdentityStandIn

_posixshmem = pytest.importorskip("_posixshmem", reason="POSIX shared memory only")


def segment_exists(name):
    """Whether a POSIX shm segment of that name exists (opened and closed again, never registered)."""
    try:
        fd = _posixshmem.shm_open("/" + name, os.O_RDONLY, 0o600)
    except FileNotFoundError:
        return False
    os.close(fd)
    return True


def shm_client(endpoint, **config):
    config.setdefault("timeout_s", 5)
    return BridgeClient(ClientConfig(endpoint, **config), shared_memory=True)


def frame_cases():
    """(image, submit options) covering every format, layers, alpha and reply-format conversions."""
    rng = np.random.default_rng(7)
    rgba = rng.integers(0, 256, (16, 32, 4), dtype=np.uint8)
    layers = {"mask": rng.integers(0, 256, (16, 32), dtype=np.uint8), "depth": rng.random((16, 32), dtype=np.float32),
              "flow": rng.random((16, 32, 2), dtype=np.float32), "intrinsics": [20, 20, 15.5, 7.5], "pose": np.eye(4)}
    return [
        (rgb8(seed=1), {}),
        (rgba, {"format": "bgra8"}),
        (rgba, {"format": "bgra8", "reply_format": "rgb8"}),
        (rgba, {"format": "rgba8", "reply_format": "bgra8", **layers}),
        (rng.random((16, 32, 3)).astype(np.float16), {"reply_format": "rgb32f"}),
        (rng.random((16, 32, 3), dtype=np.float32) * 1.5, {"reply_format": "rgb8"}),  # clamped above 1
        (rng.random((16, 32, 3), dtype=np.float32), {"reply_format": "rgb16f", "depth": layers["depth"]}),
    ]


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_shm_round_trips_are_bit_exact_with_the_inline_path(transport, ipc_dir):
    bind = ("tcp://127.0.0.1:*",) if transport == "tcp" else (f"ipc://{ipc_dir}/s.sock",)
    cases = frame_cases()
    with running_server(bind=bind) as server:
        with shm_client(server.endpoints[0]) as shm, BridgeClient(ClientConfig(server.endpoints[0])) as inline:
            for index, (image, options) in enumerate(cases):
                sent = image.copy()
                via_shm = shm.enhance(image, camera=f"c{index}", **options)
                via_socket = inline.enhance(image, camera=f"c{index}", **options)
                assert via_shm.image.dtype == via_socket.image.dtype and via_shm.image.shape == via_socket.image.shape
                assert np.array_equal(via_shm.image, via_socket.image), (index, options.get("reply_format"))
                assert "shm" in via_shm.header and "shm" not in via_socket.header
                assert via_shm.image.flags.writeable and via_shm.image.flags.owndata  # the caller's copy
                assert np.array_equal(image, sent)  # the input is untouched
            status = shm.shm
            assert status["state"] == "active" and status["frames_shm"] == len(cases)
            assert status["frames_inline"] == 0 and status["resent_inline"] == 0
        counts = server.stats.snapshot()["counts"]
        assert counts["shm_frames_in"] == counts["shm_frames_out"] == len(cases)
        assert counts["shm_attached"] >= 1


def test_pipelined_frames_each_get_their_own_result():
    engine = IdentityStandIn(delay_s=0.03)  # frames queue up behind each other: several in flight
    with running_server(engine, queue_depth=8) as server, shm_client(server.endpoints[0], max_in_flight=8) as client:
        client.enhance(rgb8(), camera="warmup")
        sent = {}
        for round_ in range(3):
            for index in range(8):
                image = rgb8(seed=100 * round_ + index)
                sent[client.submit(image, camera=f"cam{index % 4}")] = image
            replies = list(client.results())
            assert len(replies) == 8 and all(r.ok for r in replies), [r.kind for r in replies]
            for reply in replies:
                assert np.array_equal(reply.image, sent[reply.seq]), reply.seq
        assert max(engine.batch_sizes) >= 2  # frames really were in flight together
        assert client.shm["frames_shm"] == 25 and client.shm["frames_inline"] == 0


def test_result_views_hold_their_slot_until_released():
    with running_server() as server, shm_client(server.endpoints[0], max_in_flight=2, shm_result_views=True) as client:
        first, second, third, fourth = (rgb8(seed=s) for s in range(4))
        r1 = client.enhance(first, camera="a")
        r2 = client.enhance(second, camera="a")
        assert not r1.image.flags.writeable and not r1.image.flags.owndata  # views of the slots
        r3 = client.enhance(third, camera="a")  # both slots held by views: this one goes inline
        assert client.shm["frames_shm"] == 2 and client.shm["frames_inline"] == 1
        assert "shm" not in r3.header and np.array_equal(r3.image, third)
        assert np.array_equal(r1.image, first) and np.array_equal(r2.image, second)  # not overwritten
        r1.release()
        r1.release()  # idempotent
        r4 = client.enhance(fourth, camera="a")
        assert client.shm["frames_shm"] == 3 and r4.header["shm"]["slot"] == r1.header["shm"]["slot"]
        assert np.array_equal(r4.image, fourth) and np.array_equal(r2.image, second)
        r2.release()
        r4.release()


def test_a_timed_out_frame_keeps_its_slot_until_its_late_reply():
    engine = IdentityStandIn()
    with running_server(engine) as server, shm_client(server.endpoints[0], max_in_flight=1) as client:
        client.enhance(rgb8(), camera="x")  # negotiates the one-slot segment
        late, next_frame = rgb8(seed=1), rgb8(seed=2)
        engine.delay_s = 0.6
        with pytest.raises(BridgeTimeout):
            client.enhance(late, camera="x", timeout_s=0.3)  # still in the engine; written to the slot at ~0.6 s
        engine.delay_s = 0.0
        # Reusing the slot now would let that late write replace this frame's pixels.
        reply = client.enhance(next_frame, camera="x")
        assert np.array_equal(reply.image, next_frame) and "shm" not in reply.header
        assert client.shm["frames_inline"] == 1
        deadline = time.monotonic() + 5
        while client.late_replies == 0:  # the late reply frees the slot
            assert time.monotonic() < deadline, "the late reply never came"
            client.heartbeat(timeout_s=1)
        reply = client.enhance(rgb8(seed=3), camera="x")
        assert "shm" in reply.header and np.array_equal(reply.image, rgb8(seed=3))


@pytest.mark.parametrize("setup, reason", [
    ({"bind": ("tcp://0.0.0.0:*",), "allow_remote": True}, "not a same-host endpoint"),
    ({"shared_memory": False}, "disabled"),
])
def test_refusal_falls_back_to_inline_frames(setup, reason):
    with running_server(**setup) as server:
        endpoint = server.endpoints[0].replace("0.0.0.0", "127.0.0.1")
        with shm_client(endpoint, shm_slot_bytes=4096) as client:
            welcome = client.hello()
            assert welcome["shm"]["accepted"] is False and reason in welcome["shm"]["reason"]
            assert client.shm["state"] == "refused" and reason in client.shm["reason"]
            for seed in range(2):
                reply = client.enhance(rgb8(seed=seed), camera="a")
                assert np.array_equal(reply.image, rgb8(seed=seed)) and "shm" not in reply.header
            assert client.shm["frames_inline"] == 2 and client.shm["frames_shm"] == 0
        assert server.stats.counts["shm_refused"] == 1 and len(server._shm) == 0


def test_a_lost_segment_is_resent_inline_then_offered_again():
    with running_server() as server, shm_client(server.endpoints[0]) as client:
        assert "shm" in client.enhance(rgb8(seed=1), camera="a").header
        first = client.shm["name"]
        client.bye()  # the server detaches, as after an expiry or a restart
        assert len(server._shm) == 0
        reply = client.enhance(rgb8(seed=2), camera="a")  # SHM_NOT_ATTACHED, resent inline at once
        assert reply.ok and "shm" not in reply.header and np.array_equal(reply.image, rgb8(seed=2))
        assert client.shm["resent_inline"] == 1 and client.shm["state"] == "new"
        assert not segment_exists(first)  # the retired segment was unlinked once its slot was answered
        reply = client.enhance(rgb8(seed=3), camera="a")  # offers a new segment
        assert "shm" in reply.header and np.array_equal(reply.image, rgb8(seed=3))
        assert client.shm["state"] == "active" and client.shm["name"] != first
        assert server._shm.segment_name(client._routing_id) == client.shm["name"]


def test_a_restarted_server_gets_frames_inline_then_a_new_segment():
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    client = shm_client(endpoint, timeout_s=1, reconnect_ivl_s=0.05, reconnect_ivl_max_s=0.2)
    try:
        with running_server(bind=(endpoint,)):
            assert "shm" in client.enhance(rgb8(seed=1), camera="a").header
            first = client.shm["name"]
        with running_server(bind=(endpoint,)) as second:  # knows nothing of the client's segment
            deadline = time.monotonic() + 20
            while True:
                try:
                    reply = client.enhance(rgb8(seed=2), camera="a")
                    break
                except BridgeTimeout:
                    assert time.monotonic() < deadline, "client never reconnected"
            assert "shm" not in reply.header and np.array_equal(reply.image, rgb8(seed=2))
            assert client.shm["resent_inline"] >= 1 and not segment_exists(first)
            reply = client.enhance(rgb8(seed=3), camera="a")
            assert "shm" in reply.header and np.array_equal(reply.image, rgb8(seed=3))
            assert second._shm.segment_name(client._routing_id) == client.shm["name"] != first
    finally:
        client.close(bye=False)


def test_a_larger_frame_offers_a_larger_segment():
    with running_server() as server, shm_client(server.endpoints[0]) as client:
        assert "shm" in client.enhance(rgb8(16, 32), camera="small").header
        small = client.shm
        big = rgb8(64, 64, seed=4)
        reply = client.enhance(big, camera="big")
        assert "shm" in reply.header and np.array_equal(reply.image, big)
        assert client.shm["slot_bytes"] >= 64 * 64 * 3 > small["slot_bytes"]
        assert not segment_exists(small["name"])
        assert server.stats.counts["shm_attached"] == 2 and server.stats.counts["shm_detached"] == 1


def test_close_and_garbage_collection_unlink_the_segment():
    context = zmq.Context()
    try:
        with running_server() as server:
            client = BridgeClient(ClientConfig(server.endpoints[0], timeout_s=5), context, shared_memory=True)
            client.enhance(rgb8(), camera="a")
            name = client.shm["name"]
            assert segment_exists(name)
            client.close()
            assert not segment_exists(name)
            client = BridgeClient(ClientConfig(server.endpoints[0], timeout_s=5), context, shared_memory=True)
            client.enhance(rgb8(), camera="a")
            name = client.shm["name"]
            client._socket.close(0)  # no ResourceWarning; the segment is what is under test
            del client
            gc.collect()
            assert not segment_exists(name)
    finally:
        context.term()
