"""Renderer inputs over the bridge: protocol fields reach the engine's per-frame inputs.

The engine given camera-to-world poses against in-process streams given the hand-converted
relative poses, and a round trip through a real server whose model limits its output to the mask:
pixels outside the mask band come back bit-identical, so the mask reached it; a frame without a
mask comes back unchanged with the documented ``passthrough`` flag.
"""

import dataclasses

import numpy as np
import pytest
import torch
from bridge_helpers import rgb8, running_server

from simharmon.bridge.client import BridgeClient
from simharmon.bridge.config import ClientConfig
from simharmon.config import load_config
from simharmon.io.pixels import uint8_hwc_to_frame
from simharmon.models.enhancer import build_enhancer
from simharmon.runtime.factory import engine_for
from simharmon.runtime.stream import StreamingEnhancer

H, W = 16, 32


def aux(mask_value=None, pose=None, intrinsics=(20.0, 20.0, (W - 1) / 2, (H - 1) / 2)):
    """What the server hands the engine for one frame (decoded layers, protocol intrinsics and pose)."""
    mask = None if mask_value is None else torch.full((1, 1, H, W), mask_value, dtype=torch.uint8)
    return {"mask": mask, "depth": torch.full((1, 1, H, W), 4.0), "flow": torch.zeros(1, 2, H, W),
            "intrinsics": intrinsics, "camera_to_world": pose}


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
    engine = engine_for(depth_model)
    reference = StreamingEnhancer(engine.model)
    k = torch.tensor([[20.0, 0.0, (W - 1) / 2], [0.0, 20.0, (H - 1) / 2], [0.0, 0.0, 1.0]])
    for t, frame in enumerate(frames):
        got = engine.step_many({"k": frame}, {"k": aux(pose=c2w[t].ravel().tolist())})["k"]
        pose = None
        if t:  # by hand: pure translation, so current -> previous is + (x_cur - x_prev) = +0.8 m along x
            pose = torch.eye(4, dtype=torch.float64)
            pose[0, 3] = 0.8
        want = reference.step(frame, depth=torch.full((1, 1, H, W), 4.0), intrinsics=k, pose=pose)
        assert torch.equal(got.output, want)
    result = engine.step_many({"k": frames[0]}, {"k": aux()})["k"]  # the history needs the motion
    assert "needs the per-frame input pose" in result.error


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
    engine = engine_for(model)
    reference = StreamingEnhancer(engine.model)
    with running_server(engine) as server, \
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
            np.testing.assert_array_equal(got, want)
        reply = client.enhance(frames[0], camera="cam")  # no mask: the frame passes through, flagged
        assert reply.ok and reply.passthrough == "no_mask" and reply.history_reset
        np.testing.assert_array_equal(reply.image, frames[0])


def test_welcome_lists_no_inputs_for_the_stand_in():
    with running_server() as server, BridgeClient(ClientConfig(server.endpoints[0], timeout_s=5)) as client:
        assert client.hello()["inputs"] == []
