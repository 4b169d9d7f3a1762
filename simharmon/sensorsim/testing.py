"""A FAKE SensorsimService renderer for tests and benchmarks of the proxy: it replays given frames.

It is not a renderer. ``FakeRenderer(frames, masks)`` serves, for camera ``c`` and ``frame_start_us``
``t``, frame ``(t // FRAME_US) % len(frames[c])`` of ``frames[c]``, encoded in the requested format.
Asked without dynamic objects (the proxy's background render for masks), it returns the same frame
with the mask's pixels changed by 128 levels, so the proxy's mask equals the given mask exactly.

Failure switches: scene :data:`MISSING_SCENE` fails with ``NOT_FOUND``; scene :data:`GARBAGE_SCENE`
returns bytes that are no image; a batch item whose camera is not in ``frames`` fails alone
(``success=false``).
"""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Dict, List, Mapping, Optional

import grpc
import numpy as np

from .images import encode_image
from .protos import common_pb2, sensorsim_pb2_grpc
from .protos import sensorsim_pb2 as pb

__all__ = ["FRAME_US", "GARBAGE_SCENE", "MISSING_SCENE", "FakeRenderer", "render_request"]

FRAME_US = 100_000
MISSING_SCENE = "no-such-scene"
GARBAGE_SCENE = "garbage-scene"


def render_request(scene_id: str, camera: str, index: int, fmt: int = 1, height: int = 0, width: int = 0,
                   actors: int = 1, quality: float = 0.0) -> pb.RGBRenderRequest:
    """An ``RGBRenderRequest`` for frame ``index`` of ``camera`` with ``actors`` dynamic objects."""
    request = pb.RGBRenderRequest(scene_id=scene_id, resolution_h=height, resolution_w=width,
                                  frame_start_us=index * FRAME_US, frame_end_us=index * FRAME_US + FRAME_US // 2,
                                  image_format=fmt, image_quality=quality)
    request.camera_intrinsics.logical_id = camera
    for actor in range(actors):
        request.dynamic_objects.add(track_id=f"actor-{actor}")
    return request


class FakeRenderer(sensorsim_pb2_grpc.SensorsimServiceServicer):
    """FAKE renderer (see the module docstring); ``calls`` counts the RPCs by method name."""

    def __init__(self, frames: Mapping[str, List[np.ndarray]], masks: Optional[Mapping[str, List[np.ndarray]]] = None,
                 delay_s: float = 0.0) -> None:
        self.frames = dict(frames)
        self.masks = dict(masks or {})
        self.delay_s = delay_s
        self.calls: Dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: Optional[grpc.Server] = None
        self.port = 0

    def _count(self, name: str) -> None:
        with self._lock:
            self.calls[name] = self.calls.get(name, 0) + 1

    def start(self, address: str = "127.0.0.1:0") -> str:
        """Serve on ``address``; returns ``HOST:PORT``."""
        self._server = grpc.server(futures.ThreadPoolExecutor(4, thread_name_prefix="fake-renderer"))
        sensorsim_pb2_grpc.add_SensorsimServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port(address)
        self._server.start()
        return f"{address.rpartition(':')[0]}:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait()

    def image(self, request: pb.RGBRenderRequest, camera: str) -> bytes:
        """The encoded frame for ``request`` (raises KeyError for an unknown camera)."""
        frames = self.frames[camera]
        index = (request.frame_start_us // FRAME_US) % len(frames)
        image = frames[index]
        if not request.dynamic_objects and camera in self.masks:
            actor = self.masks[camera][index] > 0
            image = image.copy()
            image[actor] ^= 0x80
        return encode_image(image, request.image_format, request.image_quality)

    def _render(self, request: pb.RGBRenderRequest, camera: str, context) -> bytes:
        if request.scene_id == MISSING_SCENE:
            context.abort(grpc.StatusCode.NOT_FOUND, f"scene {request.scene_id!r} is not loaded")
        if request.scene_id == GARBAGE_SCENE:
            return b"\x89PNG this is not an image"
        if self.delay_s:
            threading.Event().wait(self.delay_s)
        return self.image(request, camera)

    def render_rgb(self, request, context):
        self._count("render_rgb")
        try:
            return pb.RGBRenderReturn(image_bytes=self._render(request, request.camera_intrinsics.logical_id, context))
        except KeyError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown camera {request.camera_intrinsics.logical_id!r}")

    def batch_render_rgb(self, request, context):
        self._count("batch_render_rgb")
        reply = pb.BatchRGBRenderReturn()
        for item in request.items:
            out = reply.items.add(camera_name=item.camera_name)
            try:
                out.result.image_bytes = self._render(item.request, item.camera_name, context)
                out.success = True
            except KeyError:
                out.success, out.error_message = False, f"unknown camera {item.camera_name!r}"
        return reply

    def get_version(self, request, context):
        self._count("get_version")
        return common_pb2.VersionId(version_id="fake-renderer 1.0", git_hash="0" * 40)

    def get_available_scenes(self, request, context):
        self._count("get_available_scenes")
        return common_pb2.AvailableScenesReturn(scene_ids=["sample-drive"])

    def get_available_cameras(self, request, context):
        self._count("get_available_cameras")
        reply = pb.AvailableCamerasReturn()
        for name in self.frames:
            reply.available_cameras.add(logical_id=name)
        return reply
