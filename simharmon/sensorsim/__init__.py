"""The AlpaSim / NuRec SensorsimService proxy (``simharmon proxy sensorsim``): docs/SENSORSIM_PROXY.md.

gRPC is optional: this package imports without it; :mod:`.proxy` (the server) and :mod:`.protos`
(the generated code) need ``grpcio`` and ``protobuf`` (``pip install 'simharmon[sensorsim]'``).
"""

from .enhancer import EnhanceItem, EnhanceOutcome, RenderEnhancer, mask_from_background
from .images import ImageFormatError, decode_image, encode_image

__all__ = ["EnhanceItem", "EnhanceOutcome", "ImageFormatError", "RenderEnhancer", "decode_image", "encode_image",
           "mask_from_background"]
