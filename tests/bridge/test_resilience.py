"""Dead, slow and greedy peers: nothing hangs, nothing grows without bound."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import msgpack
import pytest
from bridge_helpers import REPO, dealer, frame_header, rgb8, running_server, serve_process

from simharmon.bridge.client import BridgeClient, BridgeError, BridgeTimeout
from simharmon.bridge.config import ClientConfig
from simharmon.bridge.processor import IdentityStandIn


def wait_until(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


STREAMING_CLIENT = textwrap.dedent("""
    import sys, numpy as np
    from simharmon.bridge.client import BridgeClient
    from simharmon.bridge.config import ClientConfig
    client = BridgeClient(ClientConfig(sys.argv[1], sim="doomed", timeout_s=5, max_in_flight=4))
    image = np.zeros((16, 32, 3), np.uint8)
    while True:  # stream on two cameras until killed
        for cam in ("a", "b"):
            client.submit(image, camera=cam)
        for _ in client.results(timeout_s=1):
            pass
""")


def test_client_killed_mid_stream():
    engine = IdentityStandIn(delay_s=0.01)
    with running_server(engine, stream_idle_s=0.6) as server:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen([sys.executable, "-c", STREAMING_CLIENT, server.endpoints[0]], env=env,
                                stderr=subprocess.PIPE)
        try:
            wait_until(lambda: server.stats.counts["frames_in"] >= 20, 30, "the doomed client to stream")
            with BridgeClient(ClientConfig(server.endpoints[0], sim="survivor", timeout_s=5)) as survivor:
                survivor.enhance(rgb8(), camera="x")
                wait_until(lambda: len(server.scheduler) == 3, 10, "both clients' streams")
                proc.kill()  # SIGKILL mid-stream: no bye, maybe frames in flight
                proc.wait(10)
                deadline = time.monotonic() + 15
                while len(server.scheduler) != 1:  # the dead client's two streams expire...
                    assert survivor.enhance(rgb8(), camera="x").ok  # ...while the survivor is served
                    assert time.monotonic() < deadline, server.scheduler.describe()
                    time.sleep(0.1)
                assert server.scheduler.describe()[0]["camera"] == "x"
                assert server.stats.counts["streams_expired"] >= 2 and not server.stopped
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_restarted_under_a_live_client():
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    args = ("--engine", "identity", "--bind", endpoint, "--stats-interval-s", "0")
    client = BridgeClient(ClientConfig(endpoint, timeout_s=1.0, reconnect_ivl_s=0.05, reconnect_ivl_max_s=0.2))
    try:
        with serve_process(*args) as first:
            assert client.enhance(rgb8(), camera="cam").ok
            client.submit(rgb8(), camera="cam")  # in flight when the server dies
            first.proc.kill()
            first.proc.wait(10)
        start = time.monotonic()
        replies = list(client.results())
        assert time.monotonic() - start < 3  # bounded by the client timeout, not forever
        assert [r.kind for r in replies] in (["timeout"], ["result"])  # answered just before, or lost
        start = time.monotonic()
        with pytest.raises(BridgeTimeout):
            client.enhance(rgb8(), camera="cam")  # nobody there: fails within the timeout
        assert time.monotonic() - start < 3
        with serve_process(*args) as second:
            deadline = time.monotonic() + 20
            while True:  # the same client object reconnects by itself
                try:
                    reply = client.enhance(rgb8(seed=5), camera="cam")
                    break
                except BridgeTimeout:
                    assert time.monotonic() < deadline, "client never reconnected"
            assert reply.ok and reply.image.shape == (16, 32, 3)
            assert client.enhance(rgb8(), camera="cam").ok
            assert second.stop(signal.SIGTERM) == 0  # graceful on SIGTERM
            assert "SIGTERM, shutting down" in second.stderr and "final stats" in second.stderr
    finally:
        client.close(bye=False)


def test_overload_drops_frames_and_stays_bounded():
    engine = IdentityStandIn(delay_s=0.03)  # ~33 batches/s, far below what the clients offer
    with running_server(engine, max_streams=4, queue_depth=1) as server:
        config = ClientConfig(server.endpoints[0], timeout_s=10, max_in_flight=24)
        with BridgeClient(config) as client:
            sent, replies = [], []
            for index in range(120):  # a render loop that never waits for the enhancer
                for cam in ("a", "b", "c"):
                    while client.in_flight >= config.max_in_flight:
                        replies += client.results(timeout_s=0.05)
                    sent.append(client.submit(rgb8(seed=index % 5), camera=cam, frame_index=index))
                replies += client.results(timeout_s=0)
            replies += client.results()
            # Stream count is bounded too: a fourth and fifth camera of another client hit the limit.
            with BridgeClient(ClientConfig(server.endpoints[0], timeout_s=10)) as other:
                other.enhance(rgb8(), camera="d")
                with pytest.raises(BridgeError, match="TOO_MANY_STREAMS"):
                    other.enhance(rgb8(), camera="e")
                assert len(server.scheduler) == 4 and len(engine.keys()) == 4
        assert sorted(r.seq for r in replies) == sorted(sent)  # every frame answered, none lost
        kinds = {k: sum(r.kind == k for r in replies) for k in ("result", "dropped", "error", "timeout")}
        assert kinds["error"] == kinds["timeout"] == 0
        assert kinds["dropped"] > 60 and kinds["result"] >= 3, kinds
        assert {r.reason for r in replies if r.kind == "dropped"} == {"superseded"}
        for cam in ("a", "b", "c"):
            done = [r.frame_index for r in replies if r.ok and r.camera == cam]
            assert done == sorted(done) and done[-1] == 119  # in order, and the latest frame wins
        # Bounded: never more than queue_depth frames per stream, streams * depth overall.
        assert server.scheduler.stream_high_water == 1 and server.scheduler.queued_high_water <= 3


def test_a_peer_that_never_reads_does_not_stall_others():
    engine = IdentityStandIn()
    with running_server(engine, sndhwm=4) as server:
        with dealer(server.endpoints[0], RCVHWM=1) as deaf:
            frame = bytes(512 * 256 * 3)
            for cam in range(40):  # never reads its replies: 40 x 1.5 MB (rgb32f), far beyond socket buffers
                header = frame_header(512, 256, seq=cam, camera=f"c{cam}", options={"reply_format": "rgb32f"})
                deaf.send_multipart([msgpack.packb(header), frame])
            with BridgeClient(ClientConfig(server.endpoints[0], timeout_s=5)) as client:
                start = time.monotonic()
                for _ in range(5):
                    assert client.enhance(rgb8(), camera="ok").ok
                assert time.monotonic() - start < 5
            wait_until(lambda: server.stats.counts["undeliverable"] > 0, 10, "undeliverable replies")
            deaf.send(msgpack.packb({"version": 1, "type": "heartbeat", "seq": 2}))  # still its own peer
        assert not server.stopped


def test_serve_shuts_down_gracefully_on_sigint():  # SIGTERM: see the restart test's second server
    sig = signal.SIGINT
    with serve_process("--engine", "identity", "--bind", "tcp://127.0.0.1:*", "--stats-interval-s", "0",
                       "--identity-delay-ms", "300") as server:
        with BridgeClient(ClientConfig(server.endpoints[0], timeout_s=5)) as client:
            for cam in ("a", "b"):
                client.submit(rgb8(), camera=cam)
            time.sleep(0.1)
            client.submit(rgb8(), camera="a")  # waits behind the first batch
            start = time.monotonic()
            server.send_signal(sig)
            replies = list(client.results())
            server.proc.wait(timeout=10)  # exits on its own; stop() would race it with a SIGTERM
            code = server.stop(timeout_s=10)  # only collects the output now
        assert code == 0 and time.monotonic() - start < 10
        assert "stopped" in server.stdout and "shutting down" in server.stderr
        assert "final stats" in server.stderr
        # Everything in flight got an answer: a result, "dropped (shutdown)", or, for a frame that
        # reached the server only while it was stopping, the SHUTTING_DOWN error. Never a timeout.
        answered = [r.kind in ("result", "dropped") or (r.kind == "error" and r.code == "SHUTTING_DOWN")
                    for r in replies]
        assert len(replies) == 3 and all(answered), replies
        assert all(r.reason == "shutdown" for r in replies if r.kind == "dropped")
