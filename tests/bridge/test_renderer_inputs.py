"""Renderer inputs over the bridge (issue 5): protocol fields -> the enhancer's per-frame inputs.

Unit tests of the conversions against hand computations, the engine against in-process streams
given the hand-converted inputs, and a round trip through a real server whose model limits its
output to the mask: pixels outside the mask band come back bit-identical, so the mask reached it.
"""

import dataclasses

import numpy as np
import pytest
import torch
from bridge_helpers import rgb8, running_server

from simharmon.bridge.client import BridgeClient, BridgeError
from simharmon.bridge.config import ClientConfig
from simharmon.bridge.engines import FrameAux, ModelEngine
from simharmon.bridge.renderer_inputs import InputConverter, intrinsics_matrix, relative_pose
from simharmon.config import StreamConfig, load_config
from simharmon.io.pixels import uint8_hwc_to_frame
from simharmon.models.enhancer import build_enhancer
from simharmon.runtime.stream import StreamingEnhancer

H, W = 16, 32

# Previous camera: turned 90 degrees about z (its x axis is the world's y), at world (2, 0, 0).
PREV_C2W = [0, -1, 0, 2,
            1, 0, 0, 0,
            0, 0, 1, 0,
            0, 0, 0, 1]
# Current camera: axis-aligned, at world (2, 1, 0).
CUR_C2W = [1, 0, 0, 2,
           0, 1, 0, 1,
           0, 0, 1, 0,
           0, 0, 0, 1]
# By hand: X_prev = R_prev^T (X_cur + (2, 1, 0) - (2, 0, 0)), R_prev^T = [[0, 1, 0], [-1, 0, 0], [0, 0, 1]],
# so the linear part is R_prev^T and the translation R_prev^T (0, 1, 0) = (1, 0, 0).
CUR_TO_PREV = [[0, 1, 0, 1],
               [-1, 0, 0, 0],
               [0, 0, 1, 0],
               [0, 0, 0, 1]]


def test_relative_pose_matches_a_hand_computation():
    assert np.allclose(relative_pose(PREV_C2W, CUR_C2W), CUR_TO_PREV, rtol=0, atol=1e-12)
    # the current camera's point (1, 0, 0) is world (3, 1, 0), i.e. (1, 1, 0) from the previous
    # camera's centre, which its rotated axes read as (1, -1, 0)
    assert np.allclose(relative_pose(PREV_C2W, CUR_C2W) @ [1, 0, 0, 1], [1, -1, 0, 1], rtol=0, atol=1e-12)
    assert np.allclose(relative_pose(CUR_C2W, CUR_C2W), np.eye(4), rtol=0, atol=1e-12)


def test_intrinsics_matrix():
    k = intrinsics_matrix([20.0, 21.0, 15.5, 7.5])
    assert k.dtype == torch.float64 and k.shape == (1, 3, 3)
    assert k[0].tolist() == [[20.0, 0.0, 15.5], [0.0, 21.0, 7.5], [0.0, 0.0, 1.0]]


def aux(mask_value=None, pose=None, intrinsics=(20.0, 20.0, (W - 1) / 2, (H - 1) / 2)):
    mask = None if mask_value is None else torch.full((1, 1, H, W), mask_value, dtype=torch.uint8)
    return FrameAux(mask=mask, depth=torch.full((1, 1, H, W), 4.0), flow=torch.zeros(1, 2, H, W),
                    intrinsics=intrinsics, pose=pose)


def test_converter_passes_what_the_options_use():
    region = InputConverter(StreamConfig(region_pixel=True), "cpu")
    converted = region.convert(["k"], {"k": aux(mask_value=51, pose=CUR_C2W)})
    assert sorted(converted.inputs["k"]) == ["mask"]  # depth, flow and pose are not used: not passed
    mask = converted.inputs["k"]["mask"]
    assert mask.dtype == torch.float32 and torch.equal(mask, torch.full((1, 1, H, W), 0.2))
    assert InputConverter(StreamConfig(), "cpu").convert(["k"], {"k": aux(1)}).inputs is None

    flow = InputConverter(StreamConfig(history_warp="flow"), "cpu")
    assert sorted(flow.convert(["k"], {"k": aux(pose=CUR_C2W)}).inputs["k"]) == ["flow"] == flow.used
    assert InputConverter(StreamConfig(history_warp="depth", region_latent=True), "cpu").used == [
        "mask", "depth", "intrinsics", "pose"]


def test_converter_makes_relative_poses_per_stream():
    depth = InputConverter(StreamConfig(history_warp="depth"), "cpu")
    first = depth.convert(["a", "b"], {"a": aux(pose=PREV_C2W), "b": aux(pose=CUR_C2W)})
    assert "pose" not in first.inputs["a"] and first.broken == []  # first frame: no previous pose
    assert first.inputs["a"]["intrinsics"][0, 0, 2] == (W - 1) / 2
    depth.commit(first.poses)
    second = depth.convert(["a", "b"], {"a": aux(pose=CUR_C2W), "b": aux(pose=CUR_C2W)})
    assert torch.allclose(second.inputs["a"]["pose"], torch.tensor([CUR_TO_PREV], dtype=torch.float64), atol=1e-12)
    assert torch.equal(second.inputs["b"]["pose"], torch.eye(4, dtype=torch.float64)[None])
    assert depth.convert(["a"], {"a": aux(pose=CUR_C2W)}).inputs["a"]["pose"].shape == (1, 4, 4)  # not committed
    depth.commit(depth.convert(["a"], {"a": aux()}).poses)  # a frame without a pose
    assert depth.convert(["a"], {"a": aux(pose=CUR_C2W)}).broken == ["a"]  # cannot relate: restart
    depth.remove("b")
    assert "pose" not in depth.convert(["b"], {"b": aux(pose=CUR_C2W)}).inputs["b"]


@pytest.fixture(scope="module")
def depth_model():
    config = load_config("tiny")
    stream = dataclasses.replace(config.stream, layout="per_frame", history="partial", offsets=(1, 2),
                                 history_warp="depth")
    return build_enhancer(dataclasses.replace(config, stream=stream), seed=4)


def test_engine_feeds_hand_converted_poses_to_the_stream(depth_model):
    """Camera-to-world poses through the engine give what relative poses give in process."""
    gen = torch.Generator().manual_seed(0)
    frames = [torch.rand(1, 3, H, W, generator=gen) for _ in range(3)]
    c2w = [np.eye(4) for _ in range(3)]
    for t, matrix in enumerate(c2w):
        matrix[0, 3] = 0.8 * t  # moving along x at a plane 4 m away
    engine = ModelEngine(depth_model)
    given = []
    step_many = engine.multi.step_many
    engine.multi.step_many = lambda frames, inputs: given.append(inputs) or step_many(frames, inputs)
    reference = StreamingEnhancer(depth_model)
    k = torch.tensor([[20.0, 0.0, (W - 1) / 2], [0.0, 20.0, (H - 1) / 2], [0.0, 0.0, 1.0]])
    for t, frame in enumerate(frames):
        got = engine.step_many({"k": frame}, {"k": aux(pose=c2w[t].ravel().tolist())})["k"]
        pose = None
        if t:  # by hand: pure translation, so current -> previous is + (x_cur - x_prev) = +0.8 m along x
            pose = torch.eye(4, dtype=torch.float64)
            pose[0, 3] = 0.8
        want = reference.step(frame, depth=torch.full((1, 1, H, W), 4.0), intrinsics=k, pose=pose)
        torch.testing.assert_close(got, want, rtol=0, atol=1.01 / 255)
        sent = given[-1]["k"].get("pose")
        assert (sent is None) == (pose is None) and (pose is None or torch.allclose(sent[0], pose, atol=1e-12))
    with pytest.raises(ValueError, match="needs the per-frame input pose"):
        engine.step_many({"k": frames[0]}, {"k": aux()})  # the history needs the motion


def box_mask(top, left, size=8):
    mask = np.zeros((48, 64), np.uint8)
    mask[top:top + size, left:left + size] = 255
    return mask


def test_round_trip_mask_reaches_the_model():
    """region_pixel through the real server: outside the mask band the reply is the input, bit for bit."""
    config = load_config("tiny")
    band = 3
    stream = dataclasses.replace(config.stream, layout="per_frame", history="partial", offsets=(1,),
                                 region_pixel=True, region_pixel_band=band)
    model = build_enhancer(dataclasses.replace(config, stream=stream), seed=3)
    frames = [rgb8(48, 64, seed=s) for s in range(2)]
    masks = [box_mask(8, 8), box_mask(24, 40)]
    reference = StreamingEnhancer(model)
    with running_server(ModelEngine(model)) as server, \
            BridgeClient(ClientConfig(server.endpoints[0], timeout_s=60)) as client:
        assert client.hello()["inputs"] == ["mask"]
        for image, mask in zip(frames, masks):
            got = client.enhance(image, camera="cam", mask=mask).image
            near = torch.nn.functional.max_pool2d(torch.from_numpy(mask)[None, None].float(), 2 * band + 3, stride=1,
                                                  padding=band + 1)[0, 0].numpy() > 0
            assert np.array_equal(got[~near], image[~near])  # outside the band: the input itself
            assert not np.array_equal(got[near], image[near])  # inside: enhanced
            want = reference.step(uint8_hwc_to_frame(image), mask=torch.from_numpy(mask)[None, None] / 255.0)
            want = np.floor(want[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
            assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
        with pytest.raises(BridgeError) as info:
            client.enhance(frames[0], camera="cam")  # no mask: this stream cannot run
        assert info.value.code == "ENGINE_ERROR" and "mask" in info.value.message


def test_welcome_lists_no_inputs_for_the_stand_in():
    with running_server() as server, BridgeClient(ClientConfig(server.endpoints[0], timeout_s=5)) as client:
        assert client.hello()["inputs"] == []
