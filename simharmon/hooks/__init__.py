"""In-process post-render hooks (zero-copy on the GPU): see :mod:`.post_render`, adapters for
gsplat (:mod:`.gsplat`) and CARLA camera callbacks (:mod:`.carla`)."""

from .carla import CarlaCameraHook, EnhancedImage
from .gsplat import GsplatAdapter
from .post_render import DictAdapter, ImageAdapter, PostRenderHook, RenderedFrames, post_render_hook

__all__ = [
    "CarlaCameraHook",
    "DictAdapter",
    "EnhancedImage",
    "GsplatAdapter",
    "ImageAdapter",
    "PostRenderHook",
    "RenderedFrames",
    "post_render_hook",
]
