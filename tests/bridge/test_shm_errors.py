"""Shared memory against bad input and dead peers: bad offers are refused with a reason, bad slot
references get clear errors, a killed client costs the server nothing; the server never unlinks."""

import os
import subprocess
import sys
import textwrap
import time
from multiprocessing import shared_memory

import msgpack
import numpy as np
import pytest
from bridge_helpers import REPO, dealer, frame_header, recv_header, rgb8, running_server
from test_shm import segment_exists, shm_client

from simharmon.bridge.processor import IdentityStandIn
from simharmon.bridge.protocol import PIXEL_FORMATS, ErrorCode, Limits
from simharmon.bridge.shm_client import ClientSegment
from simharmon.bridge.shm_protocol import SHM_HEADER_BYTES

pytest.importorskip("_posixshmem", reason="POSIX shared memory only")

W, H = 32, 16
FRAME_BYTES = W * H * 3  # 1536
SLOT_BYTES = W * H * 4  # test segments' slots: a bgra8 reply, and no 64-pixel-wide frame, fits


def hello(sock, shm, seq=1):
    sock.send(msgpack.packb({"version": 1, "type": "hello", "seq": seq, "shm": shm}))
    reply, rest = recv_header(sock)
    assert reply["type"] == "welcome" and reply["seq"] == seq and rest == [], reply
    return reply["shm"]


@pytest.fixture
def segment():
    seg = ClientSegment(slots=2, slot_bytes=SLOT_BYTES)
    yield seg
    seg.close()


@pytest.fixture
def foreign_segment():
    """A segment not made by a simharmon client (no magic)."""
    seg = shared_memory.SharedMemory(create=True, size=SHM_HEADER_BYTES + 2 * SLOT_BYTES)
    yield seg
    seg.close()
    seg.unlink()


def test_bad_offers_are_refused_with_a_reason_and_never_unlinked(segment, foreign_segment):
    good = segment.offer()
    cases = [
        (5, "must be a map"),
        ({k: v for k, v in good.items() if k != "token"}, "lacks ['token']"),
        ({**good, "name": "../etc/passwd"}, "'shm.name'"),
        ({**good, "name": 7}, "'shm.name'"),
        ({**good, "name": "shb_no_such_segment"}, "No such file"),
        ({**good, "token": "00" * 16}, "another token"),
        ({**good, "token": "xyz"}, "'shm.token'"),
        ({**good, "slots": 0}, "'shm.slots'"),
        ({**good, "slots": 65}, "'shm.slots'"),
        ({**good, "slots": True}, "'shm.slots'"),
        ({**good, "slots": 3}, "less than"),  # the segment holds 2 slots
        ({**good, "slot_bytes": 100}, "multiple of 64"),
        ({**good, "slot_bytes": 2 * 1024 * 1024}, "message size limit"),
        ({**good, "slot_bytes": "2048"}, "'shm.slot_bytes'"),
        ({**good, "name": foreign_segment.name}, "magic"),
    ]
    with running_server(limits=Limits(max_message_bytes=1024 * 1024)) as server, dealer(server.endpoints[0]) as sock:
        for seq, (offer, needle) in enumerate(cases, start=1):
            answer = hello(sock, offer, seq)
            assert answer["accepted"] is False and needle in answer["reason"], (offer, answer)
        assert server.stats.counts["shm_refused"] == len(cases) and len(server._shm) == 0
        assert hello(sock, good, seq=99) == {"accepted": True, "name": segment.name, "slots": 2,
                                             "slot_bytes": SLOT_BYTES}
        sock.send_multipart([msgpack.packb(frame_header(W, H, seq=100)), rgb8().tobytes()])  # inline still works
        assert recv_header(sock)[0]["type"] == "result"
    assert segment_exists(segment.name) and segment_exists(foreign_segment.name)  # detached, not unlinked


def shm_frame(seq, slot=0, name=None, **fields):
    return msgpack.packb(frame_header(W, H, seq=seq, shm={"name": name, "slot": slot}, **fields))


def test_malformed_slot_references_get_clear_errors_and_the_server_keeps_serving(segment):
    image = rgb8(seed=5)
    with running_server() as server, dealer(server.endpoints[0]) as sock, dealer(server.endpoints[0]) as stranger:
        assert hello(sock, segment.offer())["accepted"] is True
        name = segment.name
        cases = [
            ([shm_frame(1, slot=2, name=name)], ErrorCode.BAD_FIELD, "'shm.slot' must be in [0, 1]"),
            ([shm_frame(2, slot=64, name=name)], ErrorCode.BAD_FIELD, "'shm.slot'"),
            ([shm_frame(3, slot=-1, name=name)], ErrorCode.BAD_FIELD, "'shm.slot'"),
            ([shm_frame(4, slot="0", name=name)], ErrorCode.BAD_FIELD, "'shm.slot'"),
            ([shm_frame(5, slot=0.0, name=name)], ErrorCode.BAD_FIELD, "'shm.slot'"),
            ([shm_frame(6, slot=True, name=name)], ErrorCode.BAD_FIELD, "'shm.slot'"),
            ([shm_frame(7, name=5)], ErrorCode.BAD_FIELD, "'shm.name'"),
            ([msgpack.packb(frame_header(W, H, seq=8, shm=[name, 0]))], ErrorCode.BAD_FIELD, "'shm' must be a map"),
            ([msgpack.packb(frame_header(W, H, seq=9, shm={"name": name, "slot": 0, "bytes": 9}))],
             ErrorCode.BAD_FIELD, "unknown key"),
            ([msgpack.packb(frame_header(2 * W, H, seq=10, shm={"name": name, "slot": 0}))], ErrorCode.TOO_LARGE,
             "need 3072 bytes"),
            ([shm_frame(11, name=name, options={"reply_format": "rgb32f"})], ErrorCode.TOO_LARGE, "reply"),
            ([shm_frame(12, name=name, layers=["mask", "depth"])], ErrorCode.TOO_LARGE, "depth 2048 at 2048"),
            ([shm_frame(13, name=name), image.tobytes()], ErrorCode.BAD_PART_COUNT, "1 part(s) (header)"),
            ([shm_frame(14, name="shb_someone_else")], ErrorCode.SHM_NOT_ATTACHED, "not attached"),
        ]
        for parts, code, needle in cases:
            sock.send_multipart(parts)
            reply, rest = recv_header(sock)
            seq = msgpack.unpackb(parts[0])["seq"]
            assert (reply["type"], reply.get("code"), reply["seq"], rest) == ("error", code, seq, []), reply
            assert needle in reply["message"], reply["message"]
        stranger.send(shm_frame(20, name=name))  # another client cannot use this client's segment
        reply, _ = recv_header(stranger)
        assert reply["code"] == ErrorCode.SHM_NOT_ATTACHED
        assert server.stats.counts.get("shm_frames_in", 0) == 0

        # Still serving: a valid reference is answered through the slot.
        segment.write(1, (("frame", 0, FRAME_BYTES),), [image])
        sock.send(shm_frame(30, slot=1, name=name, format="rgb8", options={"reply_format": "bgra8"}))
        reply, rest = recv_header(sock)
        assert reply["type"] == "result" and rest == []
        assert reply["shm"] == {"name": name, "slot": 1, "bytes": W * H * 4}
        result = segment.read(1, PIXEL_FORMATS["bgra8"], W, H)
        assert np.array_equal(result[..., [2, 1, 0]], image) and (result[..., 3] == 255).all()

        sock.send(msgpack.packb({"version": 1, "type": "bye", "seq": 31}))
        assert recv_header(sock)[0]["type"] == "ok"
        sock.send(shm_frame(32, name=name))  # detached by bye
        reply, _ = recv_header(sock)
        assert reply["code"] == ErrorCode.SHM_NOT_ATTACHED and reply["seq"] == 32
        assert not server.stopped and len(server._shm) == 0
    assert segment_exists(segment.name)


def test_a_slot_still_in_use_is_refused(segment):
    engine = IdentityStandIn(delay_s=0.3)
    with running_server(engine) as server, dealer(server.endpoints[0]) as sock:
        assert hello(sock, segment.offer())["accepted"] is True
        sock.send(shm_frame(1, slot=0, name=segment.name, camera="a"))
        sock.send(shm_frame(2, slot=0, name=segment.name, camera="b"))  # its reply is not out yet
        reply, _ = recv_header(sock)
        assert (reply["seq"], reply["code"]) == (2, ErrorCode.BAD_FIELD) and "still belongs" in reply["message"]
        reply, _ = recv_header(sock)
        assert (reply["seq"], reply["type"]) == (1, "result")
        sock.send(shm_frame(3, slot=0, name=segment.name, camera="b"))  # answered: free again
        assert recv_header(sock)[0]["type"] == "result"


STREAMING_CLIENT = textwrap.dedent("""
    import sys, numpy as np
    from simharmon.bridge.client import BridgeClient
    from simharmon.bridge.config import ClientConfig
    client = BridgeClient(ClientConfig(sys.argv[1], sim="doomed", timeout_s=5, max_in_flight=4), shared_memory=True)
    image = np.zeros((16, 32, 3), np.uint8)
    client.enhance(image, camera="a")
    print(client.shm["name"], flush=True)
    while True:  # stream through shared memory on two cameras until killed
        for cam in ("a", "b"):
            client.submit(image, camera=cam)
        for _ in client.results(timeout_s=1):
            pass
""")


def test_a_client_killed_mid_stream_is_detached_and_the_server_keeps_serving():
    engine = IdentityStandIn(delay_s=0.01)
    with running_server(engine, stream_idle_s=0.6) as server:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen([sys.executable, "-c", STREAMING_CLIENT, server.endpoints[0]], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            name = proc.stdout.readline().strip()
            assert name.startswith("shb_"), proc.stderr.read() if proc.poll() is not None else name
            deadline = time.monotonic() + 30
            while server.stats.counts["shm_frames_out"] < 20:
                assert time.monotonic() < deadline and proc.poll() is None, "the doomed client did not stream"
                time.sleep(0.05)
            with shm_client(server.endpoints[0], sim="survivor") as survivor:
                assert "shm" in survivor.enhance(rgb8(), camera="x").header
                assert len(server._shm) == 2
                proc.kill()  # SIGKILL mid-stream: no bye, frames in flight in its slots
                proc.wait(10)
                deadline = time.monotonic() + 15
                while len(server._shm) != 1:  # the dead client expires and its segment is detached...
                    reply = survivor.enhance(rgb8(seed=2), camera="x")  # ...while the survivor is served
                    assert "shm" in reply.header and np.array_equal(reply.image, rgb8(seed=2))
                    assert time.monotonic() < deadline, server.scheduler.describe()
                    time.sleep(0.1)
                assert server._shm.segment_name(survivor._routing_id) == survivor.shm["name"]
                assert server.stats.counts["shm_detached"] >= 1 and not server.stopped
            deadline = time.monotonic() + 15
            while segment_exists(name):  # the dead client's resource tracker unlinks it, not the server
                assert time.monotonic() < deadline, f"segment {name} of the killed client was never unlinked"
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            proc.stdout.close()
            proc.stderr.close()
