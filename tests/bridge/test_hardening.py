"""Regression tests for defects found from outside (issue 12): each fails on the code before the fix.

Wrong-typed fields, nil fields, non-string map keys, seq echo on every error, the session nonce
against reply mix-ups under a fixed routing id, renderer-layer validation, loopback forms and the
ipc socket file.
"""

import os
import stat
import threading

import msgpack
import numpy as np
import pytest
import zmq
from bridge_helpers import dealer, frame_header, recv_header, running_server

from simharmon.bridge.client import BridgeClient, BridgeError
from simharmon.bridge.config import ClientConfig, ServerConfig, check_endpoint, is_loopback_endpoint
from simharmon.bridge.processor import IdentityStandIn
from simharmon.bridge.protocol import LAYERS
from simharmon.io.pixels import LayerError, check_layer

W, H = 16, 16


def ask(sock, header, *buffers, raw=None):
    sock.send_multipart([raw if raw is not None else msgpack.packb(header, use_bin_type=True), *buffers])
    return recv_header(sock)[0]


@pytest.fixture(scope="module")
def sock():
    with running_server() as server, dealer(server.endpoints[0]) as socket_:
        yield socket_


# -- item 1: a map or array in a string field -------------------------------------------------------


@pytest.mark.parametrize("change", [{"format": ["rgb8"]}, {"format": {"a": 1}},
                                    {"options": {"reply_format": ["rgb8"]}}, {"options": {"reply_format": {}}}])
def test_containers_in_string_fields_are_bad_field_with_seq(sock, change):
    reply = ask(sock, frame_header(W, H, seq=42, **change), bytes(W * H * 3))
    assert (reply["type"], reply["code"], reply["seq"]) == ("error", "BAD_FIELD", 42), reply
    assert ("'format'" if "format" in change else "'options.reply_format'") in reply["message"]


@pytest.mark.parametrize("raw, needle", [
    (msgpack.packb({"version": 1, "type": "hello", "seq": 42}) + b"\x00", "bytes after"),
    (msgpack.packb({"version": 1, "type": "hello", "seq": 42, 7: 1}), "int key 7"),
    (msgpack.packb({"version": 1, "type": "hello", "seq": 42, b"seq": 1}, use_bin_type=True), "bin key b'seq'"),
    (msgpack.packb({**frame_header(W, H, seq=42), "options": {b"reset": True}}, use_bin_type=True),
     "header.options has a bin key"),
])
def test_malformed_headers_that_decoded_as_a_map_echo_seq(sock, raw, needle):
    reply = ask(sock, None, raw=raw)
    assert (reply["code"], reply.get("seq")) == ("MALFORMED", 42), reply
    assert needle in reply["message"]


def test_internal_errors_echo_seq_too(monkeypatch):
    with running_server() as server, dealer(server.endpoints[0]) as sock:
        monkeypatch.setattr(server, "_on_frame", lambda *a: 1 / 0)  # a server bug
        reply = ask(sock, frame_header(W, H, seq=77), bytes(W * H * 3))
        assert (reply["code"], reply["seq"]) == ("INTERNAL_ERROR", 77)


# -- item 2: nil means absent on optional fields --------------------------------------------------------


@pytest.mark.parametrize("change", [{"timestamp_us": None}, {"layers": None}, {"intrinsics": None}, {"pose": None},
                                    {"options": None}, {"options": {"reset": None, "reply_format": None}}])
def test_nil_optional_frame_fields_are_absent(sock, change):
    reply = ask(sock, frame_header(W, H, seq=5, **change), bytes(W * H * 3))
    assert reply["type"] == "result" and reply["seq"] == 5, reply
    if "timestamp_us" in change:
        assert "timestamp_us" not in reply  # absent in the request, so absent in the reply


def test_nil_seq_and_nil_bye_stream_are_absent(sock):
    reply = ask(sock, frame_header(W, H, seq=None), bytes(W * H * 3))
    assert reply["type"] == "result" and "seq" not in reply
    reply = ask(sock, {"version": 1, "type": "bye", "seq": 8, "sim": None, "camera": None})
    assert (reply["type"], reply["request"], reply["seq"]) == ("ok", "bye", 8)


def test_nil_required_fields_are_refused_as_required(sock):
    reply = ask(sock, {**frame_header(W, H, seq=9), "width": None}, bytes(W * H * 3))
    assert reply["code"] == "BAD_FIELD" and "'width' is required" in reply["message"]


# -- item 6 (spec): duplicated keys, unknown streams ---------------------------------------------------


def test_a_duplicated_key_takes_its_last_value(sock):
    header = frame_header(W, H, seq=11)
    packer = msgpack.Packer()
    raw = packer.pack_map_header(len(header) + 1) + packer.pack("width") + packer.pack(999)
    raw += b"".join(packer.pack(k) + packer.pack(v) for k, v in header.items())  # width 16 comes last
    reply = ask(sock, None, bytes(W * H * 3), raw=raw)
    assert reply["type"] == "result" and reply["width"] == W, reply


@pytest.mark.parametrize("request_", [{"type": "reset", "sim": "never", "camera": "seen"},
                                      {"type": "bye", "sim": "never", "camera": "seen"}])
def test_reset_and_bye_of_an_unknown_stream_are_ok(sock, request_):
    reply = ask(sock, {"version": 2, "session": 1, "seq": 12, **request_})
    assert (reply["type"], reply["request"], reply["seq"], reply["session"]) == ("ok", request_["type"], 12, 1)


# -- item 4: versions and the session nonce --------------------------------------------------------------


def test_version_2_needs_a_session_and_replies_in_the_request_version(sock):
    reply = ask(sock, {"version": 2, "type": "hello", "seq": 3})
    assert reply["code"] == "BAD_FIELD" and "'session' is required" in reply["message"]
    welcome = ask(sock, {"version": 2, "type": "hello", "seq": 3, "session": 2**64 - 1})
    assert welcome["version"] == 2 and welcome["session"] == 2**64 - 1 and welcome["protocol_versions"] == [1, 2]
    old = ask(sock, {"version": 1, "type": "hello", "seq": 4})
    assert old["version"] == 1 and old["type"] == "welcome" and "session" not in old


def test_a_restarted_client_with_a_fixed_routing_id_never_takes_the_dead_ones_reply():
    """The dead process's frame (seq 1) is answered after the new process, same routing id, sent its
    own seq 1: that late reply must not be matched to the new request."""
    first, second = np.full((H, W, 3), 10, np.uint8), np.full((H, W, 3), 200, np.uint8)
    for trial in range(3):
        with running_server(IdentityStandIn(delay_s=0.4)) as server:
            config = ClientConfig(server.endpoints[0], routing_id=b"carla-fixed", timeout_s=5)
            dead = BridgeClient(config)
            dead.submit(first, camera="front")
            while server.stats.counts.get("frames_in", 0) < 1:
                pass
            dead.close(bye=False)  # killed: its frame is still in the engine
            with BridgeClient(config) as restarted:
                assert restarted.session != dead.session
                reply = restarted.enhance(second, camera="front")
                assert (reply.image == second).all(), f"trial {trial}: took the dead process's reply"
                assert restarted.foreign_replies == 1  # it did arrive here, and was recognised


def test_two_live_sockets_sharing_a_routing_id_never_get_each_others_images():
    """Documented in PROTOCOL.md §5: they take the routing id from each other and lose messages,
    but with sessions neither takes the other's reply for its own."""
    with running_server() as server:
        clients = [BridgeClient(ClientConfig(server.endpoints[0], sim=name, routing_id=b"shared", timeout_s=0.5))
                   for name in ("a", "b")]
        images = [np.full((H, W, 3), v, np.uint8) for v in (10, 200)]
        answered = 0
        try:
            for _ in range(10):
                for client, image in zip(clients, images):
                    try:
                        assert (client.enhance(image, camera="c").image == image).all()
                        answered += 1
                    except BridgeError as exc:
                        assert exc.code == "TIMEOUT", exc
        finally:
            for client in clients:
                client.close()
        assert answered > 0


def test_the_client_reports_a_version_1_only_server_instead_of_timing_out():
    """An older server refuses version 2 without echoing the (unknown to it) session."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")

    def old_server():
        identity, raw = router.recv_multipart()
        refusal = {"version": 1, "type": "error", "seq": msgpack.unpackb(raw)["seq"], "code": "UNSUPPORTED_VERSION",
                   "message": "protocol version 2 is not supported; this server speaks [1]"}
        router.send_multipart([identity, msgpack.packb(refusal)])

    thread = threading.Thread(target=old_server, daemon=True)
    thread.start()
    try:
        with BridgeClient(ClientConfig(f"tcp://127.0.0.1:{port}", timeout_s=5)) as client:
            with pytest.raises(BridgeError) as info:
                client.hello()
            assert info.value.code == "UNSUPPORTED_VERSION" and "speaks [1]" in info.value.message
    finally:
        thread.join(5)
        router.close(0)
        ctx.term()


# -- item 5: renderer layers, pose and intrinsics ------------------------------------------------------


def layer_bytes(name, values):
    return np.asarray(values, dtype=np.dtype(LAYERS[name].dtype)).tobytes()


@pytest.mark.parametrize("name, bad, needle", [
    ("depth", np.nan, "NaN, negative or -inf"), ("depth", -1.0, "NaN, negative or -inf"),
    ("depth", -np.inf, "NaN, negative or -inf"), ("flow", np.inf, "NaN or infinite"), ("flow", np.nan, "NaN or infinite"),
])
def test_invalid_layer_values_are_bad_layer(sock, name, bad, needle):
    values = np.ones((H, W, LAYERS[name].channels), np.float32)
    values[3, 5, -1] = bad
    reply = ask(sock, frame_header(W, H, seq=21, layers=[name]), bytes(W * H * 3), layer_bytes(name, values))
    assert (reply["code"], reply["seq"]) == ("BAD_LAYER", 21), reply
    assert needle in reply["message"] and "(x=5, y=3)" in reply["message"]


def test_no_surface_depth_and_finite_flow_are_accepted(sock):
    depth = np.zeros((H, W), np.float32)
    depth[0, :4] = np.inf  # 0 and +inf: no surface
    flow = np.full((H, W, 2), -3.5, np.float32)
    reply = ask(sock, frame_header(W, H, seq=22, layers=["mask", "depth", "flow"]), bytes(W * H * 3),
                bytes([255]) * (W * H), layer_bytes("depth", depth), layer_bytes("flow", flow))
    assert reply["type"] == "result", reply
    check_layer(bytes(W * H), LAYERS["mask"], W)  # any mask value is valid
    with pytest.raises(LayerError):
        check_layer(layer_bytes("depth", [[-0.5]]), LAYERS["depth"], 1)


RIGID = [0.0, 0, 1, 5, 1, 0, 0, 6, 0, -1, 0, 7, 0, 0, 0, 1]  # the Unreal-to-OpenCV axes, a reflection


@pytest.mark.parametrize("change, needle", [
    ({"pose": [0.0] * 16}, "last row is [0, 0, 0, 1]"),
    ({"pose": [0.0] * 15 + [1.0]}, "determinant 0"),
    ({"pose": [1.0, 2, 3, 0, 2, 4, 6, 0, 0, 0, 1, 0, 0, 0, 0, 1]}, "must be invertible"),
    ({"intrinsics": [0.0, 0.0, 7.5, 7.5]}, "fx, fy > 0"),
    ({"intrinsics": [100.0, -100.0, 7.5, 7.5]}, "fx, fy > 0"),
])
def test_degenerate_pose_and_intrinsics_are_bad_field(sock, change, needle):
    reply = ask(sock, frame_header(W, H, seq=23, **change), bytes(W * H * 3))
    assert (reply["code"], reply["seq"]) == ("BAD_FIELD", 23) and needle in reply["message"], reply
    field = next(iter(change))
    assert f"'{field}'" in reply["message"]


def test_rigid_poses_with_reflections_and_off_image_principal_points_are_accepted(sock):
    reply = ask(sock, frame_header(W, H, seq=24, pose=RIGID, intrinsics=[20.0, 20.0, -3.0, 40.0]), bytes(W * H * 3))
    assert reply["type"] == "result", reply


# -- item 6: loopback forms, ipc socket files ------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["tcp://127.1:*", "tcp://[::ffff:127.0.0.1]:*", "tcp://0x7f.0.0.1:*",
                                      "tcp://localhost:*", "tcp://[::1]:*"])
def test_every_form_of_loopback_is_accepted_and_serves(endpoint):
    with running_server(bind=(endpoint,)) as server:
        assert is_loopback_endpoint(server.endpoints[0]), server.endpoints
        with BridgeClient(ClientConfig(server.endpoints[0], timeout_s=5)) as client:
            assert client.enhance(np.zeros((H, W, 3), np.uint8)).ok


@pytest.mark.skipif(not os.path.exists("/sys/class/net/lo/flags"), reason="no Linux loopback interface 'lo'")
def test_the_loopback_interface_name_is_accepted():
    assert check_endpoint("tcp://lo:5555") == "tcp://lo:5555"
    with running_server(bind=("tcp://lo:*",)) as server:
        assert server.endpoints[0].startswith("tcp://127.0.0.1:")


@pytest.mark.parametrize("endpoint", ["tcp://[::ffff:10.0.0.1]:5555", "tcp://10.0.0.1:5555", "tcp://1:5555",
                                      "tcp://example.com:5555"])
def test_non_loopback_forms_are_still_refused(endpoint):
    with pytest.raises(ValueError, match="allow-remote"):
        ServerConfig(bind=(endpoint,))


def test_a_clean_stop_removes_the_ipc_socket_file(ipc_dir):
    path = os.path.join(ipc_dir, "bridge.sock")
    with running_server(bind=(f"ipc://{path}",)):
        assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert not os.path.exists(path)
