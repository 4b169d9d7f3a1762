"""The SensorsimService proxy end to end on loopback: a fake renderer, the proxy, a client of the same protos."""

import logging
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from simharmon.replay.enhance import EnhanceRequest, enhance_sequence
from simharmon.runtime import RuntimeSpec, build_runtime
from simharmon.sensorsim.images import JPEG, PNG, RGB_UINT8_PLANAR, decode_image
from simharmon.sensorsim.protos import common_pb2, sensorsim_pb2_grpc
from simharmon.sensorsim.protos import sensorsim_pb2 as pb
from simharmon.sensorsim.proxy import ProxyConfig, SensorsimProxy
from simharmon.sensorsim.testing import GARBAGE_SCENE, MISSING_SCENE, FakeRenderer, render_request

DRIVE = Path(__file__).resolve().parents[2] / "simharmon" / "data" / "sample_drive"
CAMERAS = ("front", "left", "right")


def _frames(seed, n=4, h=32, w=32):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_engine():
    return build_runtime(RuntimeSpec(config="tiny", device="cpu", max_streams=16))


@pytest.fixture(scope="module")
def renderer():
    fake = FakeRenderer({name: _frames(i) for i, name in enumerate(CAMERAS)})
    address = fake.start()
    yield fake, address
    fake.stop()


def _proxy(engine, upstream, **config):
    proxy = SensorsimProxy(ProxyConfig(listen="127.0.0.1:0", upstream=upstream, **config), engine)
    proxy.start()
    return proxy


@pytest.fixture
def client(tiny_engine, renderer):
    proxy = _proxy(tiny_engine, renderer[1])
    channel = grpc.insecure_channel(proxy.address)
    yield sensorsim_pb2_grpc.SensorsimServiceStub(channel), proxy
    channel.close()
    proxy.stop(0)


@pytest.mark.parametrize("fmt", [PNG, JPEG, RGB_UINT8_PLANAR])
def test_render_rgb_returns_enhanced_images_in_the_requested_format(client, renderer, fmt):
    stub, proxy = client
    fake = renderer[0]
    for index in range(2):
        request = render_request(f"scene-{fmt}", "front", index, fmt=fmt, height=32, width=32, quality=90)
        returned = stub.render_rgb(request, timeout=60).image_bytes
        image = decode_image(returned, fmt, 32, 32)  # decodes as the requested format
        assert image.shape == (32, 32, 3)
        assert returned != fake.image(request, "front")  # the random-weight tiny model changes the frame
    assert proxy.enhancer.stats.enhanced == 2 and proxy.enhancer.stats.errors == 0


def test_batch_with_several_cameras_and_a_per_item_error(client, renderer):
    stub, proxy = client
    fake = renderer[0]
    request = pb.BatchRGBRenderRequest()
    for name in ("front", "left", "nowhere", "right"):
        request.items.add(camera_name=name, request=render_request("batch", name, 0, height=32, width=32))
    reply = stub.batch_render_rgb(request, timeout=60)
    assert [it.camera_name for it in reply.items] == ["front", "left", "nowhere", "right"]
    assert [it.success for it in reply.items] == [True, True, False, True]
    assert "unknown camera" in reply.items[2].error_message and reply.items[2].result.image_bytes == b""
    for item, asked in zip(reply.items, request.items):
        if item.success:
            assert decode_image(item.result.image_bytes, PNG, 32, 32).shape == (32, 32, 3)
            assert item.result.image_bytes != fake.image(asked.request, item.camera_name)
    assert {("batch", n) for n in ("front", "left", "right")} <= set(proxy.enhancer.engine.keys())


def test_history_is_per_scene_and_camera_and_restarts(client):
    stub, proxy = client
    stats = proxy.enhancer.stats
    for index in (0, 1, 2):
        stub.render_rgb(render_request("hist-a", "left", index, height=32, width=32), timeout=60)
    assert stats.resets == 0
    stub.render_rgb(render_request("hist-a", "left", 1, height=32, width=32), timeout=60)  # time went backwards
    assert stats.resets == 1
    stub.render_rgb(render_request("hist-b", "left", 2, height=32, width=32), timeout=60)  # new scene
    assert stats.resets == 2
    keys = proxy.enhancer.engine.keys()
    assert ("hist-b", "left") in keys and ("hist-a", "left") not in keys  # the old scene's slot was freed


def test_other_rpcs_pass_through_unchanged(client, renderer):
    stub, _ = client
    fake = renderer[0]
    before = dict(fake.calls)
    assert stub.get_version(common_pb2.Empty(), timeout=10).version_id == "fake-renderer 1.0"
    assert list(stub.get_available_scenes(common_pb2.Empty(), timeout=10).scene_ids) == ["sample-drive"]
    cameras = stub.get_available_cameras(pb.AvailableCamerasRequest(scene_id="x"), timeout=10)
    assert [c.logical_id for c in cameras.available_cameras] == list(CAMERAS)
    assert fake.calls["get_version"] == before.get("get_version", 0) + 1
    with pytest.raises(grpc.RpcError) as caught:  # a method the renderer does not have: its own status
        stub.get_available_ego_masks(common_pb2.Empty(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_upstream_errors_keep_their_status(client):
    stub, _ = client
    with pytest.raises(grpc.RpcError) as caught:
        stub.render_rgb(render_request(MISSING_SCENE, "front", 0), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND and MISSING_SCENE in caught.value.details()


def test_malformed_upstream_image_gives_the_original_bytes_and_a_logged_error(client, caplog):
    stub, proxy = client
    with caplog.at_level(logging.ERROR, logger="simharmon.sensorsim"):
        returned = stub.render_rgb(render_request(GARBAGE_SCENE, "front", 0), timeout=10).image_bytes
    assert returned == b"\x89PNG this is not an image"
    assert proxy.enhancer.stats.errors == 1
    assert any("cannot decode" in r.getMessage() and GARBAGE_SCENE in r.getMessage() for r in caplog.records)


def test_strict_fails_the_render_on_enhancer_errors(tiny_engine, renderer):
    proxy = _proxy(tiny_engine, renderer[1], strict=True)
    try:
        with grpc.insecure_channel(proxy.address) as channel:
            stub = sensorsim_pb2_grpc.SensorsimServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.render_rgb(render_request(GARBAGE_SCENE, "front", 0), timeout=10)
            assert caught.value.code() == grpc.StatusCode.INTERNAL and "cannot decode" in caught.value.details()
    finally:
        proxy.stop(0)


def test_upstream_down_is_unavailable_quickly(tiny_engine):
    fake = FakeRenderer({"front": _frames(0)})
    address = fake.start()
    fake.stop()  # nothing listens on that port now
    proxy = _proxy(tiny_engine, address)
    try:
        with grpc.insecure_channel(proxy.address) as channel:
            stub = sensorsim_pb2_grpc.SensorsimServiceStub(channel)
            for call, request in ((stub.render_rgb, render_request("down", "front", 0)),
                                  (stub.get_version, common_pb2.Empty())):
                began = time.perf_counter()
                with pytest.raises(grpc.RpcError) as caught:
                    call(request, timeout=30)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert time.perf_counter() - began < 5.0
    finally:
        proxy.stop(0)


def test_bundled_model_with_masks_equals_simharmon_enhance(tmp_path):
    """Frames of the sample drive through renderer -> proxy (masks from the background render) are the
    PNGs `simharmon enhance --masks` writes for the same frames and masks."""
    count = 3
    frames = [np.asarray(Image.open(DRIVE / "left" / "frames" / f"{i:06d}.png").convert("RGB")) for i in range(count)]
    masks = [np.asarray(Image.open(DRIVE / "left" / "masks" / f"{i:06d}.png").convert("L")) for i in range(count)]
    binary = [np.where(m > 0, 255, 0).astype(np.uint8) for m in masks]  # what a pixel difference can tell
    mask_dir = tmp_path / "masks"
    mask_dir.mkdir()
    for i, mask in enumerate(binary):
        Image.fromarray(mask).save(mask_dir / f"{i:06d}.png")
    enhance_sequence(EnhanceRequest(input=DRIVE / "left" / "frames", out=tmp_path / "out", device="cpu",
                                    max_frames=count, masks=mask_dir, progress=False), log=lambda _: None)

    fake = FakeRenderer({"left": frames}, {"left": binary})
    engine = build_runtime(RuntimeSpec(device="cpu"))
    proxy = _proxy(engine, fake.start())
    try:
        assert proxy.use_masks  # the bundled model reads masks: auto -> render-diff
        with grpc.insecure_channel(proxy.address) as channel:
            stub = sensorsim_pb2_grpc.SensorsimServiceStub(channel)
            h, w = frames[0].shape[:2]
            for i in range(count):
                returned = stub.render_rgb(render_request("sample-drive", "left", i, height=h, width=w), timeout=120)
                image = decode_image(returned.image_bytes, PNG, h, w)
                expected = np.asarray(Image.open(tmp_path / "out" / "frames" / f"{i:06d}.png").convert("RGB"))
                assert np.array_equal(image, expected), f"frame {i} differs from simharmon enhance's"
                assert not np.array_equal(image, frames[i])
        assert proxy.enhancer.stats.passthrough == 0 and fake.calls["render_rgb"] == 2 * count
    finally:
        proxy.stop(0)
        fake.stop()
