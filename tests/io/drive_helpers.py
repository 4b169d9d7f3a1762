"""Small synthetic drives for the reader/writer and replay tests."""

import numpy as np

from simharmon.io.drive import CameraInfo, Intrinsics
from simharmon.io.drive_folder import DriveFolderWriter

H, W, STEP = 48, 64, 2  # content moves STEP px left per frame (camera moves 0.2 m right, plane at 10 m)
K = Intrinsics(100.0, 100.0, 31.5, 23.5)


def scene(num_frames, seed):
    """Ground truth, input (a colour-shifted patch), mask, depth, flow and poses of one camera."""
    rng = np.random.default_rng(seed)
    world = (rng.random((H, W + STEP * num_frames, 3)) * 200 + 20).astype(np.uint8)
    gt, frames, masks, depth, poses = [], [], [], [], []
    for t in range(num_frames):
        view = world[:, STEP * t:STEP * t + W].copy()
        mask = np.zeros((H, W), np.uint8)
        mask[10:26, max(30 - STEP * t, 0):max(46 - STEP * t, 0)] = 255
        shifted = view.copy()
        shifted[mask > 0] = np.clip(shifted[mask > 0].astype(int) + [60, 10, -40], 0, 255)
        pose = np.eye(4)
        pose[0, 3] = 0.2 * t
        gt.append(view), frames.append(shifted), masks.append(mask)
        depth.append(np.full((H, W), 10.0, np.float32)), poses.append(pose)
    forward = np.zeros((H, W, 2), np.float32)
    forward[..., 0] = -STEP
    flow = [(forward, -forward)] * (num_frames - 1)
    return {"frames": frames, "gt": gt, "masks": masks, "depth": depth, "flow": flow, "poses": poses}


def write_small_drive(root, cameras=("front", "rear"), num_frames=6, layers=("gt", "masks", "depth", "flow", "poses"),
                      fps=10.0):
    """Write a drive folder; returns {camera: scene dict}."""
    infos = [CameraInfo(name, W, H, K) for name in cameras]
    writer = DriveFolderWriter(root, "small", fps, infos, source={"test": True})
    scenes = {}
    for seed, name in enumerate(cameras):
        data = scenes[name] = scene(num_frames, seed)
        for t in range(num_frames):
            writer.write_frame(name, t, data["frames"][t])
            if "gt" in layers:
                writer.write_gt(name, t, data["gt"][t])
            if "masks" in layers:
                writer.write_mask(name, t, data["masks"][t])
            if "depth" in layers:
                writer.write_depth(name, t, data["depth"][t])
        if "flow" in layers:
            for t, (forward, backward) in enumerate(data["flow"]):
                writer.write_flow(name, t, forward, backward)
        if "poses" in layers:
            writer.set_poses(name, np.stack(data["poses"]))
    writer.finish(num_frames)
    return scenes
