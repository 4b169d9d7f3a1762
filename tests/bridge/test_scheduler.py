"""Stream table and bounded queues, without sockets."""

import threading
import time

import pytest

from simharmon.bridge.config import ClientConfig, ServerConfig, check_endpoint
from simharmon.bridge.protocol import ErrorCode, FrameOptions, ProtocolError, Request, StreamId
from simharmon.bridge.scheduler import Scheduler


def frame(camera="c", index=0, width=32, height=16, reset=False, max_age_ms=None):
    return Request(type="frame", seq=index, header={"seq": index, "camera": camera, "frame": index},
                   stream=StreamId("s", camera), frame_index=index, width=width, height=height,
                   options=FrameOptions(reset=reset, max_age_ms=max_age_ms))


def test_latest_frame_wins_and_queues_stay_bounded():
    sched = Scheduler(max_streams=4, queue_depth=2)
    dropped = []
    for i in range(50):
        dropped += sched.offer(b"a", frame(index=i), time.monotonic())
    assert [p.request.frame_index for p, _ in dropped] == list(range(48))
    assert {reason for _, reason in dropped} == {"superseded"}
    assert sched.queued() == 2 and sched.stream_high_water == 2
    batch = sched.take_batch(max_batch=8, timeout_s=0.1)
    assert [p.request.frame_index for p in batch.items] == [48]  # FIFO within a stream: history order
    assert [p.request.frame_index for p in sched.take_batch(8, 0.1).items] == [49]
    assert sched.take_batch(8, 0.01) is None


def test_stream_bound_size_lock_and_reset_keys():
    sched = Scheduler(max_streams=2, queue_depth=1)
    now = time.monotonic()
    sched.offer(b"a", frame("x"), now)
    sched.offer(b"b", frame("x"), now)  # same camera name, other client: another stream
    with pytest.raises(ProtocolError) as info:
        sched.offer(b"a", frame("y"), now)
    assert info.value.code == ErrorCode.TOO_MANY_STREAMS
    with pytest.raises(ProtocolError) as info:
        sched.offer(b"a", frame("x", 1, width=48), now)
    assert info.value.code == ErrorCode.STREAM_SIZE_CHANGED and "options.reset" in info.value.message
    first_key = sched.take_batch(8, 0.1).items[0].engine_key
    dropped = sched.offer(b"a", frame("x", 2, width=48, reset=True), now)
    assert dropped == []  # its queue was empty
    batch = sched.take_batch(8, 0.1)
    assert first_key in batch.removals  # the old history is retired...
    assert all(p.engine_key != first_key for p in batch.items)  # ...and never reused
    assert len(sched.remove(b"a")) == 0 and len(sched) == 1


def test_expiry_counts_client_activity():
    sched = Scheduler(max_streams=4, queue_depth=1)
    sched.offer(b"a", frame("x"), 100.0)
    sched.offer(b"b", frame("x"), 100.0)
    count, dropped = sched.expire(111.0, idle_s=10.0, client_seen={b"a": 109.0})
    assert count == 1 and [p.identity for p, _ in dropped] == [b"b"] and dropped[0][1] == "closed"
    assert len(sched) == 1


def test_max_age_expires_instead_of_running():
    sched = Scheduler(max_streams=4, queue_depth=1)
    sched.offer(b"a", frame("x", max_age_ms=1.0), time.monotonic() - 1.0)
    sched.offer(b"a", frame("y"), time.monotonic())
    batch = sched.take_batch(8, 0.1)
    assert [p.request.stream.camera for p in batch.expired] == ["x"]
    assert [p.request.stream.camera for p in batch.items] == ["y"]


def test_take_batch_wakes_on_offer_and_close():
    sched = Scheduler(max_streams=4, queue_depth=1)
    got = []
    worker = threading.Thread(target=lambda: got.append(sched.take_batch(8, 5.0)))
    worker.start()
    time.sleep(0.05)
    sched.offer(b"a", frame(), time.monotonic())
    worker.join(2)
    assert not worker.is_alive() and len(got[0].items) == 1
    sched.offer(b"a", frame(index=1), time.monotonic())
    assert [p.request.frame_index for p, _ in sched.close()] == [1]
    assert sched.take_batch(8, 5.0) is None
    with pytest.raises(ProtocolError) as info:
        sched.offer(b"a", frame(index=2), time.monotonic())
    assert info.value.code == ErrorCode.SHUTTING_DOWN


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:5555", "tcp://127.0.0.9:*", "tcp://localhost:1",
                                      "tcp://[::1]:5555", "ipc:///tmp/x.sock", "inproc://x"])
def test_loopback_endpoints_are_accepted(endpoint):
    assert check_endpoint(endpoint) == endpoint


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://10.1.2.3:5555",
                                      "tcp://eth0:5555", "tcp://example.com:80"])
def test_remote_endpoints_need_allow_remote(endpoint):
    with pytest.raises(ValueError, match="allow-remote"):
        check_endpoint(endpoint)
    assert check_endpoint(endpoint, allow_remote=True) == endpoint


@pytest.mark.parametrize("bad", [dict(bind=()), dict(max_streams=0), dict(queue_depth=1000), dict(stream_idle_s=0),
                                 dict(stats_interval_s=-1), dict(bind=("udp://127.0.0.1:1",)),
                                 dict(bind=("tcp://127.0.0.1:70000",))])
def test_server_config_validation(bad):
    with pytest.raises(ValueError):
        ServerConfig(**bad)


def test_configs_are_frozen_and_client_config_validates():
    with pytest.raises(AttributeError):
        ServerConfig().max_streams = 3
    assert ServerConfig(bind="tcp://127.0.0.1:1").bind == ("tcp://127.0.0.1:1",)
    for bad in (dict(endpoint="localhost"), dict(endpoint="tcp://x:1", timeout_s=0),
                dict(endpoint="tcp://x:1", routing_id=b"\0abc"), dict(endpoint="tcp://x:1", sim="")):
        with pytest.raises(ValueError):
            ClientConfig(**bad)
