"""A drop-in SensorsimService (AlpaSim / NuRec renderer API) in front of the renderer that enhances its images.

    proxy = SensorsimProxy(ProxyConfig(listen="127.0.0.1:50052", upstream="renderer:50051"), engine)
    proxy.start(); ...; proxy.stop()

* ``render_rgb`` and ``batch_render_rgb`` go to the renderer, then each returned image is enhanced
  (:class:`~simharmon.sensorsim.enhancer.RenderEnhancer`) and re-encoded in the requested format.
* Every other method (``render_aggregated``, ``render_lidar``, ``get_*``, and methods this
  project's .proto does not know) is forwarded as raw bytes, request and reply unchanged.
* A renderer error is returned with its own status code and details; a renderer that cannot be
  reached gives ``UNAVAILABLE`` at once (no waiting for it to come up).
* An enhancer error (an undecodable image, an engine failure) returns the renderer's image and logs
  the error, unless ``strict``: then ``render_rgb`` fails with ``INTERNAL`` and a batch item reports
  ``success=false`` with the error.
* Masks (``masks``): ``render-diff`` renders the frames that have dynamic objects a second time
  without them, in parallel, and marks the pixels that differ (:mod:`.enhancer`); ``none`` sends no
  masks; ``auto`` is ``render-diff`` for models that read masks, else ``none``.

Client metadata is forwarded to the renderer; the client's deadline bounds the renderer call.
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent import futures
from typing import List, Optional, Tuple

import grpc

from .enhancer import EnhanceItem, RenderEnhancer
from .images import PNG, RGB_UINT8_PLANAR
from .protos import sensorsim_pb2 as pb

__all__ = ["MASK_MODES", "SERVICE", "ProxyConfig", "SensorsimProxy"]

log = logging.getLogger("simharmon.sensorsim")

SERVICE = "nre.grpc.protos.sensorsim.SensorsimService"
RENDER_RGB = f"/{SERVICE}/render_rgb"
BATCH_RENDER_RGB = f"/{SERVICE}/batch_render_rgb"
MASK_MODES = ("auto", "render-diff", "none")
_HOP_HEADERS = ("grpc-", ":", "user-agent", "content-type", "te")  # metadata gRPC sets itself


@dataclasses.dataclass(frozen=True)
class ProxyConfig:
    """How the proxy listens and where the renderer is.

    listen / upstream: ``HOST:PORT``; strict: fail renders on enhancer errors; masks: one of
    :data:`MASK_MODES`; mask_threshold: levels of difference that mark an actor; workers: gRPC threads;
    upstream_timeout_s: the longest renderer call when the client sets no deadline.
    """

    listen: str = "127.0.0.1:50052"
    upstream: str = "127.0.0.1:50051"
    strict: bool = False
    masks: str = "auto"
    mask_threshold: int = 8
    workers: int = 8
    upstream_timeout_s: float = 60.0
    max_message_mb: int = 256

    def __post_init__(self) -> None:
        for name in ("listen", "upstream"):
            host, sep, port = getattr(self, name).rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"--{name} must be HOST:PORT, got {getattr(self, name)!r}")
        if self.masks not in MASK_MODES:
            raise ValueError(f"masks must be one of {MASK_MODES}, got {self.masks!r}")
        if not 0 <= self.mask_threshold < 255:
            raise ValueError(f"mask_threshold must be in [0, 255), got {self.mask_threshold}")
        if self.workers < 1 or self.upstream_timeout_s <= 0 or self.max_message_mb < 1:
            raise ValueError("workers, upstream_timeout_s and max_message_mb must be positive")


def _background_request(request: pb.RGBRenderRequest) -> pb.RGBRenderRequest:
    """The same render without dynamic objects, in a lossless format (for the mask)."""
    background = pb.RGBRenderRequest()
    background.CopyFrom(request)
    del background.dynamic_objects[:]
    if background.image_format != RGB_UINT8_PLANAR:
        background.image_format = PNG
    return background


def _camera(request: pb.RGBRenderRequest, name: str = "") -> str:
    return name or request.camera_intrinsics.logical_id


class SensorsimProxy:
    """The gRPC server. ``engine``: the runtime's engine (``build_runtime``) or another ``FrameProcessor``."""

    def __init__(self, config: ProxyConfig, engine) -> None:
        self.config = config
        self.enhancer = RenderEnhancer(engine, config.mask_threshold)
        self.use_masks = config.masks == "render-diff" or (config.masks == "auto" and
                                                          bool(getattr(engine, "reads_masks", False)))
        limit = config.max_message_mb * 1024 * 1024
        options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
        self._channel = grpc.insecure_channel(config.upstream, options=options)
        self._forwarders = {}
        self._render = self._channel.unary_unary(RENDER_RGB, request_serializer=pb.RGBRenderRequest.SerializeToString,
                                                 response_deserializer=pb.RGBRenderReturn.FromString)
        self._batch = self._channel.unary_unary(
            BATCH_RENDER_RGB, request_serializer=pb.BatchRGBRenderRequest.SerializeToString,
            response_deserializer=pb.BatchRGBRenderReturn.FromString)
        self._pool = futures.ThreadPoolExecutor(config.workers, thread_name_prefix="sensorsim-proxy")
        self._server = grpc.server(self._pool, options=options)
        self._server.add_generic_rpc_handlers((_Handler(self),))
        self.port = self._server.add_insecure_port(config.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {config.listen}")

    @property
    def address(self) -> str:
        """``HOST:PORT`` the proxy listens on (the port resolved when ``listen`` asked for port 0)."""
        return f"{self.config.listen.rpartition(':')[0]}:{self.port}"

    def start(self) -> None:
        self._server.start()

    def wait(self) -> None:
        self._server.wait_for_termination()

    def stop(self, grace: Optional[float] = 1.0) -> None:
        self._server.stop(grace).wait()
        self._channel.close()
        self._pool.shutdown(wait=False)

    # -- calls ---------------------------------------------------------------------------------
    def _call_options(self, context) -> dict:
        remaining = context.time_remaining()
        timeout = self.config.upstream_timeout_s if remaining is None else min(remaining, self.config.upstream_timeout_s)
        metadata = tuple((k, v) for k, v in context.invocation_metadata() if not k.startswith(_HOP_HEADERS))
        return {"timeout": max(timeout, 0.001), "metadata": metadata}

    def _upstream(self, call, request, context, background=None):
        """Call the renderer (and the background render alongside); a renderer error aborts with its status."""
        options = self._call_options(context)
        pending = call.future(background, **options) if background is not None else None
        try:
            reply = call(request, **options)
        except grpc.RpcError as exc:
            if pending is not None:
                pending.cancel()
            context.abort(exc.code(), exc.details() or "renderer call failed")
        extra = None
        if pending is not None:
            try:
                extra = pending.result()
            except grpc.RpcError as exc:
                log.warning("the background render for the masks failed (%s: %s); frames go without masks",
                            exc.code().name, exc.details())
        return reply, extra

    def render_rgb(self, request: pb.RGBRenderRequest, context) -> pb.RGBRenderReturn:
        wants_mask = self.use_masks and len(request.dynamic_objects) > 0
        background = _background_request(request) if wants_mask else None
        reply, extra = self._upstream(self._render, request, context, background)
        item = self._item(request, _camera(request), reply.image_bytes,
                          extra.image_bytes if extra is not None else None)
        outcome = self.enhancer.enhance([item])[0]
        if outcome.error is not None and self.config.strict:
            context.abort(grpc.StatusCode.INTERNAL, f"simharmon proxy (--strict): {outcome.error}")
        return pb.RGBRenderReturn(image_bytes=outcome.data)

    def batch_render_rgb(self, request: pb.BatchRGBRenderRequest, context) -> pb.BatchRGBRenderReturn:
        masked = [i for i, it in enumerate(request.items) if self.use_masks and len(it.request.dynamic_objects)]
        background = None
        if masked:
            background = pb.BatchRGBRenderRequest(items=[
                pb.BatchRGBRenderRequestItem(camera_name=request.items[i].camera_name,
                                             request=_background_request(request.items[i].request)) for i in masked])
        reply, extra = self._upstream(self._batch, request, context, background)
        backgrounds = {}
        if extra is not None and len(extra.items) == len(masked):
            backgrounds = {i: it.result.image_bytes for i, it in zip(masked, extra.items) if it.success}
        by_name = {it.camera_name: i for i, it in enumerate(request.items)}
        work: List[Tuple[int, EnhanceItem]] = []
        for index, returned in enumerate(reply.items):
            # Items are matched by position, or by camera_name when the renderer reordered them.
            asked_index = index if (index < len(request.items) and request.items[index].camera_name ==
                                    returned.camera_name) else by_name.get(returned.camera_name)
            if not returned.success or asked_index is None:
                continue  # the renderer's own per-item error (or an item we did not ask for) passes through
            asked = request.items[asked_index]
            work.append((index, self._item(asked.request, _camera(asked.request, asked.camera_name),
                                           returned.result.image_bytes, backgrounds.get(asked_index))))
        for (index, _), outcome in zip(work, self.enhancer.enhance([item for _, item in work])):
            returned = reply.items[index]
            if outcome.error is not None and self.config.strict:
                returned.success = False
                returned.error_message = f"simharmon proxy (--strict): {outcome.error}"
                returned.result.image_bytes = b""
            else:
                returned.result.image_bytes = outcome.data
        return reply

    def _item(self, request: pb.RGBRenderRequest, camera: str, data: bytes, background: Optional[bytes]) -> EnhanceItem:
        return EnhanceItem(
            camera=camera, scene_id=request.scene_id, frame_start_us=request.frame_start_us, data=data,
            fmt=request.image_format, height=request.resolution_h, width=request.resolution_w,
            quality=request.image_quality, background=background,
            background_fmt=RGB_UINT8_PLANAR if request.image_format == RGB_UINT8_PLANAR else PNG,
            empty_mask=self.use_masks and len(request.dynamic_objects) == 0)

    def forward(self, method: str, payload: bytes, context) -> bytes:
        """Any other unary method: the request bytes to the renderer, its reply bytes (or status) back."""
        call = self._forwarders.get(method)
        if call is None:
            call = self._forwarders.setdefault(method, self._channel.unary_unary(method))
        try:
            return call(payload, **self._call_options(context))
        except grpc.RpcError as exc:
            context.abort(exc.code(), exc.details() or "renderer call failed")


class _Handler(grpc.GenericRpcHandler):
    """Routes the two enhanced methods to their handlers and everything else to the raw forwarder."""

    def __init__(self, proxy: SensorsimProxy) -> None:
        self.proxy = proxy

    def service(self, details):
        if details.method == RENDER_RGB:
            return grpc.unary_unary_rpc_method_handler(self.proxy.render_rgb, pb.RGBRenderRequest.FromString,
                                                       pb.RGBRenderReturn.SerializeToString)
        if details.method == BATCH_RENDER_RGB:
            return grpc.unary_unary_rpc_method_handler(self.proxy.batch_render_rgb, pb.BatchRGBRenderRequest.FromString,
                                                       pb.BatchRGBRenderReturn.SerializeToString)
        method = details.method
        return grpc.unary_unary_rpc_method_handler(lambda payload, context: self.proxy.forward(method, payload, context))
