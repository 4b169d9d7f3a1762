"""The SensorsimService's image bytes <-> uint8 ``[H, W, 3]`` RGB arrays, in the formats the proxy enhances.

``RGBRenderRequest.image_format`` says how ``RGBRenderReturn.image_bytes`` is encoded:

* ``PNG`` / ``JPEG``: a complete PNG / JPEG file (decoded with OpenCV, colour order converted);
* ``RGB_UINT8_PLANAR``: ``3 * H * W`` bytes, the R plane, then G, then B, each row-major ``[H, W]``;
  its size comes from the request (``resolution_h`` / ``resolution_w``).

Other formats (JPEG2000, AVC, AV1, UNDEFINED) are not decoded: :class:`ImageFormatError`, and the
proxy hands the renderer's bytes back unchanged. A JPEG is re-encoded with the request's
``image_quality`` when it is in (0, 100], else :data:`DEFAULT_JPEG_QUALITY`.
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

__all__ = ["DEFAULT_JPEG_QUALITY", "ENHANCED_FORMATS", "ImageFormatError", "decode_image", "encode_image"]

# ImageFormat enum values of sensorsim.proto (kept here so this module needs no generated code).
PNG, JPEG, RGB_UINT8_PLANAR = 1, 2, 4
ENHANCED_FORMATS = {PNG: "PNG", JPEG: "JPEG", RGB_UINT8_PLANAR: "RGB_UINT8_PLANAR"}
DEFAULT_JPEG_QUALITY = 95


class ImageFormatError(ValueError):
    """The image bytes cannot be decoded as the request's format (or the format is not one we enhance)."""


def _format_name(fmt: int) -> str:
    return ENHANCED_FORMATS.get(fmt, f"image_format {fmt}")


def decode_image(data: bytes, fmt: int, height: int, width: int) -> np.ndarray:
    """``image_bytes`` of format ``fmt`` -> uint8 ``[H, W, 3]`` RGB (contiguous, writable).

    height / width: the request's resolution; PNG / JPEG must match it when it is given (> 0),
    RGB_UINT8_PLANAR needs it. Raises ImageFormatError naming what is wrong.
    """
    if fmt not in ENHANCED_FORMATS:
        raise ImageFormatError(f"{_format_name(fmt)} is not decoded by the proxy (only PNG, JPEG, RGB_UINT8_PLANAR)")
    if fmt == RGB_UINT8_PLANAR:
        if height <= 0 or width <= 0:
            raise ImageFormatError("RGB_UINT8_PLANAR needs resolution_h and resolution_w in the request")
        expected = 3 * height * width
        if len(data) != expected:
            raise ImageFormatError(f"RGB_UINT8_PLANAR image of {width}x{height} must have {expected} bytes, "
                                   f"got {len(data)}")
        return np.ascontiguousarray(np.frombuffer(data, np.uint8).reshape(3, height, width).transpose(1, 2, 0))
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if decoded is None:
        raise ImageFormatError(f"the renderer's {_format_name(fmt)} bytes ({len(data)} bytes) cannot be decoded")
    if (height > 0 and decoded.shape[0] != height) or (width > 0 and decoded.shape[1] != width):
        raise ImageFormatError(f"the renderer's {_format_name(fmt)} image is {decoded.shape[1]}x{decoded.shape[0]}, "
                               f"the request asked for {width}x{height}")
    return np.ascontiguousarray(decoded[:, :, ::-1])


def encode_image(image: np.ndarray, fmt: int, quality: Optional[float] = None) -> bytes:
    """uint8 ``[H, W, 3]`` RGB -> ``image_bytes`` of format ``fmt`` (PNG lossless, JPEG at ``quality``)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {tuple(image.shape)}")
    if fmt == RGB_UINT8_PLANAR:
        return np.ascontiguousarray(image.transpose(2, 0, 1)).tobytes()
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    if fmt == PNG:
        ok, buffer = cv2.imencode(".png", bgr)
    elif fmt == JPEG:
        level = int(round(quality)) if quality is not None and 0 < quality <= 100 else DEFAULT_JPEG_QUALITY
        ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, level])
    else:
        raise ImageFormatError(f"{_format_name(fmt)} is not encoded by the proxy (only PNG, JPEG, RGB_UINT8_PLANAR)")
    if not ok:
        raise ImageFormatError(f"OpenCV could not encode a {image.shape[1]}x{image.shape[0]} {_format_name(fmt)}")
    return buffer.tobytes()
