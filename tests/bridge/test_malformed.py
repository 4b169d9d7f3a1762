"""1100 malformed messages: the server answers every one with a specific error and stays up."""

import random

import msgpack
import numpy as np
import pytest
import zmq
from bridge_helpers import dealer, frame_header, recv_header, running_server

from simharmon.bridge.protocol import ErrorCode, Limits

W, H = 32, 16
FRAME_BYTES = W * H * 3


def valid_frame(seq):
    return [msgpack.packb(frame_header(W, H, seq=seq)), bytes(FRAME_BYTES)]


def random_bytes(rnd, seq):
    size = rnd.choice([1, 2, 5, 17, 100, 1000])
    first = bytes([rnd.choice([b for b in range(256) if not (0x80 <= b <= 0x8F or b in (0xDE, 0xDF))])])
    parts = [first + rnd.randbytes(size - 1)]  # not a msgpack map by its first byte
    parts += [rnd.randbytes(rnd.randint(0, 64)) for _ in range(rnd.randint(0, 3))]
    return parts, {ErrorCode.MALFORMED}, None


def truncated_header(rnd, seq):
    header = msgpack.packb(frame_header(W, H, seq=seq, intrinsics=[1.0, 2.0, 3.0, 4.0]))
    return [header[:rnd.randint(0, len(header) - 1)], bytes(FRAME_BYTES)], {ErrorCode.MALFORMED}, None


def unknown_version(rnd, seq):
    version = rnd.choice([0, 3, 4, 99, 2**32, -1])
    return [msgpack.packb(frame_header(W, H, seq=seq, version=version)), bytes(FRAME_BYTES)], \
        {ErrorCode.UNSUPPORTED_VERSION}, seq


def unknown_type(rnd, seq):
    kind = rnd.choice(["frames", "FRAME", "render", "", "helo", "x" * 300, "reply"])
    return [msgpack.packb({"version": 1, "type": kind, "seq": seq})], {ErrorCode.UNKNOWN_TYPE}, seq


def size_mismatch(rnd, seq):
    delta = rnd.choice([-FRAME_BYTES, -1, 1, 3, 1000, -7])
    if rnd.random() < 0.5:
        return [msgpack.packb(frame_header(W, H, seq=seq)), bytes(FRAME_BYTES + delta)], \
            {ErrorCode.BAD_BUFFER_SIZE}, seq
    header = frame_header(W, H, seq=seq, layers=["depth"])
    return [msgpack.packb(header), bytes(FRAME_BYTES), bytes(W * H * 4 + delta)], {ErrorCode.BAD_BUFFER_SIZE}, seq


def absurd_size(rnd, seq):
    width, height = rnd.choice([(2**31 - 1, 2**31 - 1), (10**6, 16), (16, 10**7), (4096, 4096)])
    if rnd.random() < 0.3:
        width, height = rnd.choice([(0, 16), (-16, 16), (16, -1), (2**40, 16)])
        return [msgpack.packb(frame_header(width, height, seq=seq)), b""], {ErrorCode.BAD_FIELD}, seq
    return [msgpack.packb(frame_header(width, height, seq=seq)), bytes(16)], {ErrorCode.TOO_LARGE}, seq


def wrong_part_count(rnd, seq):
    choice = rnd.randrange(4)
    if choice == 0:
        parts = [msgpack.packb(frame_header(W, H, seq=seq))]
    elif choice == 1:
        parts = [msgpack.packb(frame_header(W, H, seq=seq)), bytes(FRAME_BYTES), bytes(W * H)]
    elif choice == 2:
        parts = [msgpack.packb(frame_header(W, H, seq=seq, layers=["mask", "flow"])), bytes(FRAME_BYTES), bytes(W * H)]
    else:
        parts = [msgpack.packb({"version": 1, "type": "heartbeat", "seq": seq}), b"extra"]
    return parts, {ErrorCode.BAD_PART_COUNT}, seq


def wrong_field_type(rnd, seq):
    field, value = rnd.choice([("width", "32"), ("height", 16.0), ("frame", [1]), ("sim", 5), ("camera", None),
                               ("format", 3), ("layers", "mask"), ("options", [1]), ("pose", {"a": 1}),
                               ("timestamp_us", "now"), ("seq", "one"), ("version", 1.0)])
    header = {**frame_header(W, H, seq=seq), field: value}
    return [msgpack.packb(header), bytes(FRAME_BYTES)], {ErrorCode.BAD_FIELD}, (seq if field != "seq" else None)


CATEGORIES = [(random_bytes, 250), (truncated_header, 150), (unknown_version, 100), (unknown_type, 100),
              (size_mismatch, 150), (absurd_size, 100), (wrong_part_count, 125), (wrong_field_type, 125)]


def test_server_survives_1100_malformed_messages():
    rnd = random.Random(1234)
    cases = []
    for make, count in CATEGORIES:
        for _ in range(count):
            seq = len(cases) + 1
            cases.append((make.__name__, *make(rnd, seq)))
    assert len(cases) >= 1000
    with running_server() as server, dealer(server.endpoints[0], SNDHWM=0, RCVHWM=0) as sock:
        # Pipelined in chunks below the server's per-peer send HWM (64): a client with more
        # unread replies than that loses some by design (the server never blocks on a reader).
        for start in range(0, len(cases), 32):
            chunk = cases[start:start + 32]
            for _, parts, _, _ in chunk:
                sock.send_multipart(parts)
            for name, parts, codes, seq in chunk:
                header, rest = recv_header(sock)
                assert header["type"] == "error" and rest == [], (name, header)
                assert header["code"] in codes, (name, parts[0][:60], header)
                assert isinstance(header["message"], str) and len(header["message"]) > 10, header
                if seq is not None:
                    assert header.get("seq") == seq, (name, header)
        # Still serving: a valid frame round-trips, control messages answer.
        sock.send_multipart(valid_frame(seq=99999))
        header, rest = recv_header(sock)
        assert header["type"] == "result" and header["seq"] == 99999 and len(rest[0]) == FRAME_BYTES
        sock.send(msgpack.packb({"version": 1, "type": "stats", "seq": 7}))
        stats, _ = recv_header(sock)
        assert sum(stats["stats"]["errors"].values()) == len(cases)
        assert not server.stopped


def test_messages_over_the_transport_limit_drop_the_connection_not_the_server():
    with running_server(limits=Limits(max_message_bytes=4096)) as server:
        with dealer(server.endpoints[0], timeout_ms=500) as sock:
            sock.send_multipart([msgpack.packb(frame_header(W, H)), bytes(8192)])  # part over MAXMSGSIZE
            with pytest.raises(zmq.Again):  # the server dropped that connection unread
                sock.recv_multipart()
        with dealer(server.endpoints[0]) as sock:  # a new connection is served as usual
            header = frame_header(W, H, seq=5)
            sock.send_multipart([msgpack.packb(header), np.zeros(FRAME_BYTES, np.uint8).tobytes()])
            reply, _ = recv_header(sock)
            assert reply["type"] == "result" and reply["seq"] == 5
