"""Protocol decoding on its own: every error code, with what the error says, and the echo."""

import msgpack
import pytest

from simharmon.bridge.protocol import (
    LAYERS,
    PIXEL_FORMATS,
    ErrorCode,
    Limits,
    ProtocolError,
    decode_request,
    error_header,
    pack_header,
    reply_header,
    request_header,
)
from simharmon.bridge.shm_protocol import parse_shm_offer, slot_layout

LIMITS = Limits(max_message_bytes=10_000_000, max_width=1024, max_height=1024)
SESSION = 0x5EED_0F_C11E47
IDENTITY_POSE = [1.0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]


def frame_parts(width=8, height=4, fmt="rgb8", layers=(), **fields):
    header = request_header("frame", session=SESSION, seq=7, sim="carla", camera="front", frame=3, timestamp_us=-5, width=width,
                            height=height, format=fmt, layers=list(layers) or None, **fields)
    parts = [pack_header(header), bytes(width * height * PIXEL_FORMATS[fmt].bytes_per_pixel)]
    parts += [bytes(LAYERS[name].nbytes(width, height)) for name in layers]
    return header, parts


def refused(parts, limits=LIMITS):
    with pytest.raises(ProtocolError) as info:
        decode_request(parts, limits)
    return info.value


def test_valid_frame_with_layers_pose_and_options():
    header, parts = frame_parts(layers=("mask", "depth", "flow"), intrinsics=[100, 100.5, 4, 2],
                                pose=[0, 0, 1, 5, 1, 0, 0, 6, 0, -1, 0, 7, 0, 0, 0, 1],
                                options={"reply_format": "rgb32f", "reset": True, "max_age_ms": 20})
    req = decode_request(parts, LIMITS)
    assert (req.type, req.seq, req.stream.sim, req.stream.camera) == ("frame", 7, "carla", "front")
    assert (req.frame_index, req.timestamp_us, req.width, req.height) == (3, -5, 8, 4)
    assert req.format.name == "rgb8" and req.layers == ("mask", "depth", "flow")
    assert req.intrinsics == (100.0, 100.5, 4.0, 2.0) and req.pose[3::4] == (5.0, 6.0, 7.0, 1.0)
    assert req.options.reply_format == "rgb32f" and req.options.reset and req.options.max_age_ms == 20.0
    assert [len(req.buffers[n]) for n in ("frame", "mask", "depth", "flow")] == [96, 32, 128, 256]
    assert req.echo() == {"version": 2, "seq": 7, "session": SESSION, "sim": "carla", "camera": "front", "frame": 3,
                          "timestamp_us": -5}


@pytest.mark.parametrize("kind", ["hello", "stats", "heartbeat", "bye"])
def test_control_messages_are_one_part(kind):
    assert decode_request([pack_header(request_header(kind, session=SESSION, seq=1))], LIMITS).type == kind
    err = refused([pack_header(request_header(kind, session=SESSION, seq=1)), b"x"])
    assert err.code == ErrorCode.BAD_PART_COUNT and "1 part(s)" in err.message and err.echo["seq"] == 1


def test_reset_needs_a_stream():
    err = refused([pack_header(request_header("reset", session=SESSION, seq=2))])
    assert err.code == ErrorCode.BAD_FIELD and "'sim'" in err.message
    req = decode_request([pack_header(request_header("reset", session=SESSION, sim="a", camera="b"))], LIMITS)
    assert (req.stream.sim, req.stream.camera) == ("a", "b")


@pytest.mark.parametrize("raw, needle", [
    (b"", "empty"),
    (b"\xc1", "not valid msgpack"),
    (msgpack.packb([1, 2]), "must be a msgpack map"),
    (msgpack.packb({"version": 1}) + b"\x00", "bytes after"),
    (msgpack.packb({1: 2}), "keys must be msgpack strings"),  # integer keys are refused
    (b"\xdb\xff\xff\xff\xff", "not valid msgpack"),  # a str claiming 4 GiB
    (b"\x91" * 5000, "not valid msgpack"),  # deeply nested arrays
])
def test_malformed_headers(raw, needle):
    err = refused([raw])
    assert err.code == ErrorCode.MALFORMED and needle in err.message


def test_oversized_header_and_message():
    big = pack_header({"version": 1, "type": "hello", "pad": "x" * 70_000})
    assert refused([big]).code == ErrorCode.MALFORMED
    _, parts = frame_parts()
    err = refused(parts, Limits(max_message_bytes=50))
    assert err.code == ErrorCode.TOO_LARGE and "50-byte limit" in err.message and err.echo["seq"] == 7


def test_version_and_type():
    assert refused([pack_header({"type": "hello"})]).code == ErrorCode.BAD_FIELD
    err = refused([pack_header({"version": 3, "type": "hello", "seq": 9})])
    assert err.code == ErrorCode.UNSUPPORTED_VERSION and "version 3" in err.message and err.echo == {"seq": 9}
    assert "[1, 2]" in err.message
    assert refused([pack_header({"version": "1", "type": "hello"})]).code == ErrorCode.BAD_FIELD
    err = refused([pack_header({"version": 1, "type": "render"})])
    assert err.code == ErrorCode.UNKNOWN_TYPE and "'render'" in err.message
    assert refused([pack_header({"version": 1, "type": 3})]).code == ErrorCode.BAD_FIELD


@pytest.mark.parametrize("change, field", [
    ({"width": None}, "'width'"),
    ({"width": 0}, "'width'"),
    ({"width": 8.0}, "'width'"),
    ({"height": True}, "'height'"),
    ({"frame": -1}, "'frame'"),
    ({"seq": -1}, "'seq'"),
    ({"sim": ""}, "'sim'"),
    ({"camera": "x" * 65}, "'camera'"),
    ({"camera": b"bytes"}, "'camera'"),
    ({"format": "yuv420"}, "'format'"),
    ({"layers": ["mask", "mask"]}, "'layers'"),
    ({"layers": ["normals"]}, "'layers'"),
    ({"intrinsics": [1, 2, 3]}, "'intrinsics'"),
    ({"pose": [float("nan")] * 16}, "'pose'"),
    ({"options": {"denoise": True}}, "'options'"),
    ({"options": {"reset": 1}}, "'options.reset'"),
    ({"options": {"max_age_ms": 0}}, "'options.max_age_ms'"),
    ({"options": {"reply_format": "jpeg"}}, "'options.reply_format'"),
])
def test_bad_fields_name_the_field(change, field):
    header, parts = frame_parts()
    header = {**header, **change}
    header = {k: v for k, v in header.items() if v is not None}
    err = refused([pack_header(header), *parts[1:]])
    assert err.code == ErrorCode.BAD_FIELD and field in err.message


def test_sizes_and_part_counts():
    header, parts = frame_parts(layers=("depth",))
    err = refused(parts[:2])
    assert err.code == ErrorCode.BAD_PART_COUNT and "(header, frame, depth)" in err.message
    err = refused([parts[0], parts[1][:-1], parts[2]])
    assert err.code == ErrorCode.BAD_BUFFER_SIZE and "part 1 (frame) is 95 bytes" in err.message
    err = refused([parts[0], parts[1], parts[2] + b"\0"])
    assert err.code == ErrorCode.BAD_BUFFER_SIZE and "(depth)" in err.message and "128" in err.message
    huge = pack_header({**header, "width": 2**31 - 1, "height": 2**31 - 1, "layers": []})
    err = refused([huge, b""])
    assert err.code == ErrorCode.TOO_LARGE and "2147483647x2147483647" in err.message


def test_reply_headers_round_trip():
    header = msgpack.unpackb(reply_header("dropped", {"seq": 4, "camera": "c"}, reason="superseded"))
    assert header == {"version": 2, "type": "dropped", "seq": 4, "camera": "c", "reason": "superseded"}
    header = msgpack.unpackb(reply_header("ok", {"version": 1, "seq": 4}, request="bye"))
    assert header == {"version": 1, "type": "ok", "seq": 4, "request": "bye"}  # answered in the request's version
    header = msgpack.unpackb(error_header(ErrorCode.BAD_FIELD, "field 'x' is required"))
    assert header["code"] == "BAD_FIELD" and header["message"] == "field 'x' is required"
    with pytest.raises(ValueError):
        error_header("NOPE", "x")
    with pytest.raises(ValueError):
        reply_header("frame")


def test_frames_in_a_shared_memory_slot_are_one_part_with_an_aligned_layout():
    header, parts = frame_parts(layers=("mask", "depth"), shm={"name": "shb_1", "slot": 3},
                                options={"reply_format": "rgb32f"})
    req = decode_request(parts[:1], LIMITS)
    assert req.buffers == {} and (req.shm.name, req.shm.slot) == ("shb_1", 3)
    # frame 96 bytes at 0; mask 32 at 128 (next multiple of 64); depth 128 at 192
    assert req.shm.layout == (("frame", 0, 96), ("mask", 128, 32), ("depth", 192, 128))
    assert (req.shm.request_bytes, req.shm.reply_bytes) == (320, 8 * 4 * 12)
    err = refused(parts)  # buffers both in the slot and inline
    assert err.code == ErrorCode.BAD_PART_COUNT and "1 part(s) (header)" in err.message
    assert slot_layout([("frame", 64), ("flow", 8)]) == ((("frame", 0, 64), ("flow", 64, 8)), 72)


@pytest.mark.parametrize("shm, field", [
    ({"name": "shb_1"}, "'shm.slot'"),
    ({"name": "shb_1", "slot": 64}, "'shm.slot'"),
    ({"name": "/shb_1", "slot": 0}, "'shm.name'"),
    ({"name": "", "slot": 0}, "'shm.name'"),
    ({"name": "shb_1", "slot": 0, "offset": 4}, "'shm'"),
    ("shb_1", "'shm'"),
])
def test_bad_slot_references_name_the_field(shm, field):
    _, parts = frame_parts(shm=shm)
    err = refused(parts[:1])
    assert err.code == ErrorCode.BAD_FIELD and field in err.message and err.echo["seq"] == 7


def test_shm_offers_are_bounded_by_the_message_limit():
    offer = {"name": "shb_1", "token": "ab" * 16, "slot_bytes": 4096, "slots": 8}
    parsed = parse_shm_offer(offer, 4096)
    assert (parsed.token, parsed.segment_bytes, parsed.slot_offset(2)) == (b"\xab" * 16, 64 + 8 * 4096, 64 + 8192)
    with pytest.raises(ValueError, match="message size limit"):
        parse_shm_offer(offer, 4095)
    with pytest.raises(ValueError, match="'shm.token'"):
        parse_shm_offer({**offer, "token": "AB" * 16}, 4096)
