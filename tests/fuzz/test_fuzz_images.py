"""Fuzzing the image readers: :func:`facexai.files.load_image` (Pillow) and
:func:`facexai.data.recordio.decode_image` (OpenCV after a Pillow header check).

Property (see ``fuzz_cases``): every mutated PNG/JPEG/BMP/WebP/TIFF/GIF file reads as an RGB uint8
(H, W, 3) array (``decode_image`` may also answer ``None``, its "undecodable"), or raises
ImageFileError with a message; never another exception, a hang, or memory above 16x the file
plus 1 MiB and the decoded pixels. The pixel limit is lowered to 2**16 here so a forged size
that passes it still fits the bound.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fuzz_cases import DEFAULT_CASES, SLOW_CASES, check_reader, mutations, preload_image_plugins, write
from PIL import Image

from facexai import files
from facexai.data.recordio import decode_image
from facexai.files import ImageFileError, load_image

PIXEL_LIMIT = 1 << 16
DECODED = PIXEL_LIMIT * 4 * 4  # Pillow's RGBX buffer, the array, and a conversion copy
FORMATS = {"png": "PNG", "jpg": "JPEG", "bmp": "BMP", "webp": "WEBP", "tif": "TIFF", "gif": "GIF"}


def _valid(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (20, 16, 3), dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


#: forged sizes: zero, the limit's edges, PIL's bomb range, the format's maximum
SIDES = (0, 1, 255, 256, 257, 4096, 20_000, 65_535, 2**31 - 1, 2**32 - 1)


def _forged_sizes(cases: int, seed: int) -> Iterator[tuple[str, str, bytes]]:
    """Valid files whose header announces another width x height (PNG with a correct CRC, so the
    decoder believes it): decompression bombs and sizes just inside the limit."""
    rng = random.Random(seed)
    for case in range(cases):
        fmt = rng.choice(["png", "jpg", "bmp", "gif"])
        width, height = rng.choice(SIDES), rng.choice(SIDES)
        data = bytearray(_valid(FORMATS[fmt]))
        if fmt == "png":
            struct.pack_into(">II", data, 16, width, height)
            struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
        elif fmt == "jpg":
            sof = data.index(b"\xff\xc0")
            struct.pack_into(">HH", data, sof + 5, height & 0xFFFF, width & 0xFFFF)
        elif fmt == "bmp":
            struct.pack_into("<ii", data, 18, width & 0x7FFFFFFF, height & 0x7FFFFFFF)
        else:
            struct.pack_into("<HH", data, 6, width & 0xFFFF, height & 0xFFFF)
        yield fmt, f"forged size case {case} ({fmt} {width}x{height}, seed {seed})", bytes(data)


def _is_rgb(image: np.ndarray) -> None:
    assert isinstance(image, np.ndarray)
    assert image.dtype == np.uint8
    assert image.ndim == 3
    assert image.shape[2] == 3


def _load(path: Path) -> None:
    _is_rgb(load_image(path))


def _decode(data: bytes) -> None:
    image = decode_image(data)
    if image is not None:
        _is_rgb(image)


def _run(tmp_path: Path, cases: int, seed: int, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    monkeypatch.setattr(files, "MAX_IMAGE_PIXELS", PIXEL_LIMIT)
    preload_image_plugins()
    outcomes = {"ok": 0, "refused": 0}
    per_format = max(1, cases // len(FORMATS))
    for suffix, fmt in FORMATS.items():
        path = tmp_path / f"face.{suffix}"
        valid = _valid(fmt)
        write(path, valid)
        _load(path)  # first-use imports and codec set-up happen outside the measured cases
        _decode(valid)
        for label, data in mutations(valid, per_format, seed):
            _check_both(path, data, f"{fmt} {label}", outcomes)
    for suffix, label, data in _forged_sizes(cases // 3, seed):
        _check_both(tmp_path / f"forged.{suffix}", data, label, outcomes)
    return outcomes


def _check_both(path: Path, data: bytes, label: str, outcomes: dict[str, int]) -> None:
    """Both readers on one case, counting outcomes."""
    write(path, data)
    bound = 16 * len(data) + (1 << 20) + DECODED
    outcomes[check_reader(lambda: _load(path), ImageFileError, f"load {label}", memory_bound=bound)] += 1
    outcomes[check_reader(lambda: _decode(data), ImageFileError, f"decode {label}", memory_bound=bound)] += 1


def test_fuzz_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes = _run(tmp_path, DEFAULT_CASES, seed=14, monkeypatch=monkeypatch)
    assert outcomes["refused"] > DEFAULT_CASES // 4


@pytest.mark.slow
def test_fuzz_images_slow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _run(tmp_path, SLOW_CASES, seed=1414, monkeypatch=monkeypatch)
