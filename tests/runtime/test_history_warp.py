"""The history-warping stages and the latent-resolution inputs, without a model: moving scenes with known motion."""

from __future__ import annotations

import math

import torch

from simharmon.runtime.inputs import FrameInputs, latent_mask
from simharmon.runtime.stages import advance_motion, align_references, identity_motion, push_entries

H, W = 12, 20


def texture(seed=0, height=H, width=W + 16, channels=3):
    return torch.rand(1, channels, height, width, generator=torch.Generator().manual_seed(seed))


def panning(t, shift, tex):
    """Frame t of a scene panning left by ``shift`` px per frame: frame_t(x) = tex(x + t * shift)."""
    return tex[..., t * shift:t * shift + W].contiguous()


class Ring:
    """The pushed entries, newest first (``ring.get(1)`` = the previous frame), as the pool holds them."""

    def __init__(self, entries):
        self.entries = entries

    def get(self, offset):
        return self.entries[:, offset - 1]

    def __len__(self):
        return self.entries.shape[1]


def run_aligner(mode, frames, inputs, capacity=3):
    """Push frames with their inputs as a stream does (the same stages); returns the aligned entries
    of the last frame's view, and the ring."""
    count = min(capacity, len(frames) - 1)
    entries = frames[0].unsqueeze(1).repeat(1, capacity, 1, 1, 1)
    motion = identity_motion("flow", frames[0]).unsqueeze(1).repeat(1, capacity, 1, 1, 1) if mode == "flow" else \
        identity_motion("depth", frames[0]).unsqueeze(1).repeat(1, capacity, 1, 1)  # fmt: skip
    depth = inputs[0].depth.unsqueeze(1).repeat(1, capacity, 1, 1, 1) if mode == "depth" else None
    intrinsics = inputs[0].intrinsics.unsqueeze(1).repeat(1, capacity, 1, 1) if mode == "depth" else None
    for index, (frame, frame_inputs) in enumerate(zip(frames[:-1], inputs[:-1])):
        if index:
            motion = advance_motion(mode, motion, frame_inputs)
        entries = push_entries(entries, frame)
        motion = push_entries(motion, identity_motion(mode, frame if mode == "flow" else frame_inputs.intrinsics))
        if mode == "depth":
            depth = push_entries(depth, frame_inputs.depth)
            intrinsics = push_entries(intrinsics, frame_inputs.intrinsics)
    motion = advance_motion(mode, motion, inputs[-1])
    aligned = align_references(mode, entries[:, :count], motion[:, :count], frames[-1], inputs[-1],
                               None if depth is None else depth[:, :count],
                               None if intrinsics is None else intrinsics[:, :count], rel_tol=0.01)
    return [aligned[:, o - 1] for o in range(1, count + 1)], Ring(entries[:, :count])


def test_composed_flow_aligns_every_entry_exactly():
    tex, shift = texture(), 2
    frames = [panning(t, shift, tex) for t in range(4)]
    flow = torch.zeros(1, 2, H, W)
    flow[:, 0] = shift  # pixel x now showed tex(x + t*shift), which was at x + shift one frame before
    inputs = [FrameInputs(flow=flow)] * 4
    aligned, ring = run_aligner("flow", frames, inputs)
    for offset, entry in enumerate(aligned, start=1):
        assert not torch.equal(ring.get(offset), frames[-1])
        # integer motion: valid parts are exact copies, the rest is filled from the current frame
        assert torch.equal(entry, frames[-1]), f"offset {offset}"


def test_zero_flow_leaves_entries_bit_exact():
    frames = [texture(t)[..., :W].contiguous() for t in range(4)]
    inputs = [FrameInputs(flow=torch.zeros(1, 2, H, W))] * 4
    aligned, ring = run_aligner("flow", frames, inputs)
    for offset, entry in enumerate(aligned, start=1):
        assert torch.equal(entry, ring.get(offset))


def camera(fx=10.0, cx=9.5, cy=5.5):
    return torch.tensor([[[fx, 0.0, cx], [0.0, fx, cy], [0.0, 0.0, 1.0]]], dtype=torch.float64)


def test_depth_pose_aligns_a_translating_camera():
    # A textured plane at Z = 5; the camera moves by b = 1 along x per frame, so X_prev = X_cur + b
    # and the image pans by fx * b / Z = 2 pixels per frame.
    tex, z = texture(1), 5.0
    frames = [panning(t, 2, tex) for t in range(4)]
    pose = torch.eye(4, dtype=torch.float64)[None].clone()
    pose[0, 0, 3] = 1.0
    depth = torch.full((1, 1, H, W), z)
    inputs = [FrameInputs(depth=depth, intrinsics=camera(), pose=pose)] * 4
    aligned, ring = run_aligner("depth", frames, inputs)
    for offset, entry in enumerate(aligned, start=1):
        torch.testing.assert_close(entry, frames[-1], rtol=0, atol=1e-5)
        assert (ring.get(offset) - frames[-1]).abs().max() > 0.1


def test_depth_occlusion_falls_back_to_the_current_frame():
    frames = [texture(t)[..., :W].contiguous() for t in range(2)]
    identity = torch.eye(4, dtype=torch.float64)[None]
    near = torch.full((1, 1, H, W), 5.0)
    inputs = [FrameInputs(depth=near.clone(), intrinsics=camera(), pose=identity) for _ in range(2)]
    inputs[0].depth[..., :, :6] = 2.0  # the previous frame had an occluder on the left
    aligned, ring = run_aligner("depth", frames, inputs, capacity=1)
    torch.testing.assert_close(aligned[0][..., 7:], ring.get(1)[..., 7:], rtol=0, atol=1e-6)  # kept history
    torch.testing.assert_close(aligned[0][..., :5], frames[-1][..., :5], rtol=0, atol=1e-6)  # occluded: current


def test_latent_resolution_inputs():
    s = 8
    k = camera(fx=40.0, cx=27.3, cy=13.9).repeat(2, 1, 1)
    scaled = FrameInputs(intrinsics=k).scaled(s).intrinsics
    point = torch.tensor([0.7, -0.3, 4.0], dtype=torch.float64)
    u = (k[0] @ point)[:2] / point[2]
    u_latent = (scaled[0] @ point)[:2] / point[2]
    torch.testing.assert_close(u, s * u_latent + (s - 1) / 2)  # latent cell centres sit at s*j + (s-1)/2

    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(32.0), indexing="ij")
    affine = torch.stack([0.5 * xs + 3.0, -0.25 * ys + 1.0])[None]  # flow affine in the pixel position
    flow = FrameInputs(flow=affine).scaled(s).flow
    cy, cx = torch.meshgrid(torch.arange(2.0), torch.arange(4.0), indexing="ij")
    centre_x, centre_y = s * cx + (s - 1) / 2, s * cy + (s - 1) / 2
    torch.testing.assert_close(flow[0, 0], (0.5 * centre_x + 3.0) / s)
    torch.testing.assert_close(flow[0, 1], (-0.25 * centre_y + 1.0) / s)

    depth = torch.full((1, 1, 16, 32), 7.0)
    depth[0, 0, 3, 9] = 2.0
    assert FrameInputs(depth=depth).scaled(s).depth[0, 0].tolist() == [[7.0, 2.0, 7.0, 7.0], [7.0, 7.0, 7.0, 7.0]]
    mask = torch.zeros(1, 1, 16, 32)
    mask[0, 0, 15, 31] = 0.5
    assert latent_mask(mask, s)[0, 0].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0.5]]
    assert math.isclose(float(FrameInputs(flow=affine).scaled(1).flow[0, 0, 0, 0]), 3.0)
