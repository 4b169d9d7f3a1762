"""Property-based tests over the whole request header schema (hypothesis, fixed seed, bounded).

Every field, nested ones included, gets values of every msgpack type (nil, bool, int, float, str,
bin, array, map, ext, timestamp ext) through a real server socket. Properties:

- no request ever produces INTERNAL_ERROR, and the server keeps answering;
- a value of the wrong msgpack type is BAD_FIELD, naming the field;
- nil on an optional field is the same as leaving it out; on a required field it is BAD_FIELD;
- every reply to a header that decoded as a map echoes its seq and session (when they are valid).
"""

import msgpack
import pytest
from bridge_helpers import dealer, recv_header, running_server
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from simharmon.bridge.protocol import ErrorCode

SESSION = 0xC0FFEE_5E55_1011
W, H = 16, 16
FUZZ = settings(max_examples=250, deadline=None, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Field path -> (accepted msgpack types, required) for a version 2 `frame` request.
FRAME_SCHEMA = {
    "version": ({"int"}, True), "type": ({"str"}, True), "seq": ({"int"}, False), "session": ({"int"}, True),
    "sim": ({"str"}, True), "camera": ({"str"}, True), "frame": ({"int"}, True), "timestamp_us": ({"int"}, False),
    "width": ({"int"}, True), "height": ({"int"}, True), "format": ({"str"}, True), "layers": ({"array"}, False),
    "intrinsics": ({"array"}, False), "pose": ({"array"}, False), "options": ({"map"}, False),
    "options.reply_format": ({"str"}, False), "options.reset": ({"bool"}, False),
    "options.max_age_ms": ({"int", "float"}, False), "shm": ({"map"}, False), "shm.name": ({"str"}, True),
    "shm.slot": ({"int"}, True),
}
CONTROL_SCHEMA = {  # reset: sim and camera required; bye: optional, both or neither
    "reset": {"sim": ({"str"}, True), "camera": ({"str"}, True)},
    "bye": {"sim": ({"str"}, False), "camera": ({"str"}, False)},
}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.binary(max_size=12), st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
    st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1), st.integers(0, 999_999_999)),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)


def msgpack_type(value):
    for kind, name in ((type(None), "nil"), (bool, "bool"), (int, "int"), (float, "float"), (str, "str"),
                       (bytes, "bin"), (list, "array"), (dict, "map")):
        if isinstance(value, kind):
            return name
    return "ext"


def base_frame(seq, with_shm=False, with_options=True):
    header = {"version": 2, "type": "frame", "seq": seq, "session": SESSION, "sim": "fuzz", "camera": f"c{seq % 4}",
              "frame": seq, "timestamp_us": 5, "width": W, "height": H, "format": "rgb8"}
    if with_options:
        header["options"] = {"reply_format": "rgb8", "reset": False, "max_age_ms": 1000}
    if with_shm:
        header["shm"] = {"name": "shb_fuzz", "slot": 0}
    return header


def put(header, path, value, delete=False):
    """Set (or delete) a dotted field of a copy of ``header``."""
    header = {k: dict(v) if isinstance(v, dict) else v for k, v in header.items()}
    *outer, name = path.split(".")
    target = header[outer[0]] if outer else header
    if delete:
        target.pop(name, None)
    else:
        target[name] = value
    return header


def frame_message(header):
    parts = [msgpack.packb(header, use_bin_type=True)]
    return parts if header.get("shm") is not None else parts + [bytes(W * H * 3)]


@pytest.fixture(scope="module")
def server_socket():
    with running_server() as server, dealer(server.endpoints[0], timeout_ms=5000) as sock:
        yield server, sock


def ask(sock, parts):
    sock.send_multipart(parts)
    header, rest = recv_header(sock)
    assert not (header.get("type") == "error" and header.get("code") == ErrorCode.INTERNAL_ERROR), header
    return header, rest


def outcome(reply):
    return reply.get("type"), reply.get("code")


@seed(20260612)
@FUZZ
@given(path=st.sampled_from(sorted(FRAME_SCHEMA)), value=values, seq=st.integers(1, 2**64 - 1))
def test_any_value_in_any_frame_field(server_socket, path, value, seq):
    _, sock = server_socket
    header = base_frame(seq, with_shm=path.startswith("shm"))
    reply, _ = ask(sock, frame_message(put(header, path, value)))
    accepted, required = FRAME_SCHEMA[path]
    kind = msgpack_type(value)
    if path not in ("seq", "session"):
        assert reply.get("seq") == seq and reply.get("session") == SESSION, reply
    if kind == "nil" and not required:  # nil is absent
        absent, _ = ask(sock, frame_message(put(header, path, None, delete=True)))
        assert outcome(reply) == outcome(absent), (path, reply, absent)
    elif kind == "nil" or kind not in accepted:
        assert outcome(reply) == ("error", ErrorCode.BAD_FIELD), (path, value, reply)
        assert repr(path) in reply["message"], reply


@seed(20260613)
@FUZZ
@given(kind=st.sampled_from(["reset", "bye"]), data=st.data(), seq=st.integers(1, 2**64 - 1))
def test_any_value_in_any_control_field(server_socket, kind, data, seq):
    _, sock = server_socket
    schema = CONTROL_SCHEMA[kind]
    path = data.draw(st.sampled_from(sorted(schema)))
    value = data.draw(values)
    header = {"version": 2, "type": kind, "seq": seq, "session": SESSION, "sim": "fuzz", "camera": "c0", path: value}
    reply, _ = ask(sock, [msgpack.packb(header, use_bin_type=True)])
    assert reply.get("seq") == seq, reply
    accepted, required = schema[path]
    value_kind = msgpack_type(value)
    if value_kind == "nil" and (required or kind == "bye"):
        # reset: sim/camera required; bye with one of them nil = given only the other: both or neither
        assert outcome(reply) == ("error", ErrorCode.BAD_FIELD), reply
    elif value_kind not in accepted:
        assert outcome(reply) == ("error", ErrorCode.BAD_FIELD) and repr(path) in reply["message"], reply


@seed(20260614)
@FUZZ
@given(offer=st.one_of(values, st.fixed_dictionaries({}, optional={
    "name": values, "token": values, "slot_bytes": values, "slots": values})), seq=st.integers(1, 2**64 - 1))
def test_any_shared_memory_offer_is_answered_by_a_welcome(server_socket, offer, seq):
    _, sock = server_socket
    header = {"version": 2, "type": "hello", "seq": seq, "session": SESSION, "shm": offer}
    reply, _ = ask(sock, [msgpack.packb(header, use_bin_type=True)])
    assert reply["type"] == "welcome" and reply["seq"] == seq, reply
    if offer is not None:  # no such segment exists: every offer is refused, in the welcome, with a reason
        assert reply["shm"]["accepted"] is False and isinstance(reply["shm"]["reason"], str), reply
    else:
        assert "shm" not in reply


FIELD_CHOICE = st.one_of(st.just(("keep", None)), st.just(("delete", None)), values.map(lambda v: ("set", v)))


@seed(20260615)
@FUZZ
@given(data=st.data(), version=st.sampled_from([1, 2]), extra=st.dictionaries(st.text(max_size=6), values, max_size=3))
def test_whole_header_fuzz_never_internal_error_and_always_echoes(server_socket, data, version, extra):
    server, sock = server_socket
    seq = data.draw(st.one_of(st.integers(0, 2**64 - 1), values), label="seq")
    header = {**extra, **base_frame(1, with_shm=data.draw(st.booleans(), label="shm")), "version": version,
              "seq": seq}
    for path in sorted(FRAME_SCHEMA):
        if path in ("seq", "version") or ("." in path and not isinstance(header.get(path.split(".")[0]), dict)):
            continue
        action, value = data.draw(FIELD_CHOICE, label=path)
        if action != "keep":
            header = put(header, path, value, delete=action == "delete")
    reply, _ = ask(sock, frame_message(header))
    valid_seq = isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < 2**64
    assert reply.get("seq") == (seq if valid_seq else None), (header, reply)
    session = header.get("session")
    if isinstance(session, int) and not isinstance(session, bool) and 0 <= session < 2**64:
        assert reply.get("session") == session, (header, reply)
    assert not server.stopped
