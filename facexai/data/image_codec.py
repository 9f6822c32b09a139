"""Encoded image bytes to and from RGB arrays, with the header checked before OpenCV decodes.

Shared by every reader of packed images that come from outside (RecordIO records, ``.bin``
verification sets, images to align): they hold encoded bytes, not files, and OpenCV sizes its
buffers from an image's header before reading a pixel, so the header is checked first.
"""

from __future__ import annotations

import cv2
import numpy as np

from facexai import files


def decode_image(data: bytes) -> np.ndarray | None:
    """Decode encoded image bytes to an RGB uint8 array (H, W, 3); ``None`` if undecodable.

    Raises:
        facexai.files.ImageFileError: If the header announces more than ``MAX_IMAGE_PIXELS``.
    """
    bgr = decode_bgr(data)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_bgr(data: bytes) -> np.ndarray | None:
    """OpenCV's decode (BGR, as ``cv2.imread``) after checking the header; ``None`` if undecodable.

    OpenCV sizes its buffers from the header before it reads any pixel data, so the header is
    checked first: the image size against :data:`facexai.files.MAX_IMAGE_PIXELS` (read by
    Pillow, which parses headers without decoding) and, for PNG, every chunk length against the
    bytes that follow (OpenCV 5 allocates a forged 4 GiB chunk in full). Formats Pillow cannot
    size are not decoded: a decoder of outside data must know what it is about to allocate.

    Raises:
        facexai.files.ImageFileError: If the header announces more than ``MAX_IMAGE_PIXELS``.
    """
    size = files.header_size(data) if data else None
    if size is None or not files.png_chunks_fit(data):
        return None
    files.check_pixel_count(*size, "image header")
    try:
        return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        return None


def encode_image(image: np.ndarray, ext: str = ".png") -> bytes:
    """Encode an RGB uint8 array; PNG (default) is lossless so round-trips are bit-exact.

    Example:
        >>> import numpy as np
        >>> image = np.zeros((4, 6, 3), dtype=np.uint8)
        >>> image[0, 0] = (255, 0, 0)
        >>> decoded = decode_image(encode_image(image))
        >>> decoded.shape, bool((decoded == image).all())
        ((4, 6, 3), True)
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {image.dtype} {image.shape}")
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"OpenCV could not encode an image as {ext!r}")
    return buf.tobytes()
