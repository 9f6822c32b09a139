"""insightface verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...).

A ``.bin`` set is a pickle of ``(list of encoded images, list of issame bools)``: images ``2i`` and
``2i + 1`` form pair ``i``. The public files were written by Python 2 (image bytes pickled as
``str``), later ones by Python 3 (``bytes``).

Pickles can run arbitrary code on load, and these files are downloaded from mirrors and forums, so
they are read with an unpickler whose ``find_class`` refuses every global: only opcodes that build
builtin containers, bytes, strings, numbers and bools can succeed, so nothing is imported, called
or executed. Files that need a global (numpy arrays, Python 3 bytes saved with protocol < 3)
are refused with a message naming the file; re-save them with protocol >= 3 from plain bytes.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from facexai.data.recordio import decode_image, encode_image
from facexai.data.transforms import normalise


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for a global (a class or function) and was refused."""


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Unpickler that cannot import anything, hence cannot call anything."""

    def find_class(self, module: str, name: str) -> Any:
        raise UnsafePickleError(f"refusing global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing persistent id")


def _safe_unpickle(path: Path) -> Any:
    """Unpickle ``path`` without globals; ``encoding="bytes"`` keeps Python 2 ``str`` as bytes."""
    with path.open("rb") as fh:
        try:
            return _NoGlobalsUnpickler(fh, encoding="bytes").load()
        except UnsafePickleError as exc:
            raise ValueError(
                f"{path}: unsafe or unsupported verification .bin ({exc}); only builtin lists, tuples, "
                "bytes and bools are accepted (numpy arrays or protocol-2 Python 3 bytes need a global)"
            ) from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
            raise ValueError(f"{path}: not a readable verification .bin pickle ({type(exc).__name__}: {exc})") from None


def read_verification_bin(path: str | os.PathLike) -> tuple[list[bytes], list[bool]]:
    """Encoded image bytes and issame flags of a ``.bin`` set, validated but not decoded.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: Naming the file, for unsafe pickles, a wrong structure or a count mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"verification .bin not found: {path}")
    obj = _safe_unpickle(path)
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise ValueError(f"{path}: expected a pickled pair (images, issame), got {type(obj).__name__}")
    images = _as_byte_list(obj[0], path)
    issame = _as_bool_list(obj[1], path)
    if len(images) != 2 * len(issame):
        raise ValueError(f"{path}: {len(images)} images for {len(issame)} pairs (expected {2 * len(issame)})")
    return images, issame


def _as_byte_list(items: Any, path: Path) -> list[bytes]:
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"{path}: images must be a list, got {type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, (bytes, bytearray)):
            raise ValueError(f"{path}: image {i} is {type(item).__name__}, expected encoded bytes")
    return [bytes(item) for item in items]


def _as_bool_list(items: Any, path: Path) -> list[bool]:
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"{path}: issame must be a list, got {type(items).__name__}")
    for i, item in enumerate(items):
        # Python 2 protocol-0 pickles may hold 0/1 ints; anything else is a malformed file.
        if not isinstance(item, bool) and item not in (0, 1):
            raise ValueError(f"{path}: issame[{i}] is {item!r}, expected a bool")
    return [bool(item) for item in items]


def _decode_or_raise(data: bytes, path: Path, index: int) -> np.ndarray:
    image = decode_image(data)
    if image is None:
        raise ValueError(f"{path}: image {index} ({len(data)} bytes) cannot be decoded")
    return image


def load_verification_bin(path: str | os.PathLike) -> tuple[list[np.ndarray], list[bool]]:
    """Load an insightface verification ``.bin`` set.

    Args:
        path: The ``.bin`` file.

    Returns:
        ``(images, issame)``: RGB uint8 arrays ``(H, W, 3)`` (pair ``i`` is ``images[2i]``,
        ``images[2i + 1]``) and one bool per pair.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: Naming the file (and image), for unsafe or malformed pickles or undecodable
            images. Nothing in the file is executed.
    """
    path = Path(path)
    encoded, issame = read_verification_bin(path)
    return [_decode_or_raise(data, path, i) for i, data in enumerate(encoded)], issame


def write_verification_bin(
    path: str | os.PathLike, images: Sequence[np.ndarray | bytes], issame: Sequence[bool], ext: str = ".png"
) -> Path:
    """Write a ``.bin`` set readable by insightface's ``load_bin`` and by :func:`load_verification_bin`.

    Args:
        path: Output file.
        images: ``2 * len(issame)`` RGB uint8 arrays (encoded with ``ext``; PNG is lossless) or
            already-encoded image bytes.
        issame: One bool per pair.
        ext: Encoding for array images.

    Returns:
        The written path.
    """
    path = Path(path)
    if len(images) != 2 * len(issame):
        raise ValueError(f"{path}: {len(images)} images for {len(issame)} pairs (expected {2 * len(issame)})")
    encoded = [bytes(im) if isinstance(im, (bytes, bytearray)) else encode_image(im, ext) for im in images]
    flags = [bool(flag) for flag in issame]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        # Protocol 4 stores bytes without globals (protocol 2 would need _codecs.encode).
        pickle.dump((encoded, flags), fh, protocol=4)
    return path


class VerificationBinDataset(Dataset):
    """Face pairs of one ``.bin`` set, decoded lazily so large sets stay compact in memory.

    Args:
        path: The ``.bin`` file (read and validated at construction).
        image_size: Side length images are resized to if they differ (the public sets are 112).

    Items are dicts ``{"image_a", "image_b": float32 (3, S, S) normalised as (x/255 - 0.5)/0.5,
    "issame": bool scalar tensor}``.
    """

    def __init__(self, path: str | os.PathLike, image_size: int = 112) -> None:
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.path = Path(path)
        self.image_size = image_size
        self._encoded, self.issame = read_verification_bin(self.path)

    @property
    def name(self) -> str:
        """Set name from the file name (``lfw.bin`` -> ``"lfw"``), used to label metrics."""
        return self.path.stem

    def __len__(self) -> int:
        return len(self.issame)

    def _image(self, index: int) -> torch.Tensor:
        image = _decode_or_raise(self._encoded[index], self.path, index)
        if image.shape[:2] != (self.image_size, self.image_size):
            image = cv2.resize(image, (self.image_size, self.image_size), interpolation=cv2.INTER_LINEAR)
        return normalise(image)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"pair {index} out of range for {self.path} ({len(self)} pairs)")
        return {
            "image_a": self._image(2 * index),
            "image_b": self._image(2 * index + 1),
            "issame": torch.tensor(self.issame[index], dtype=torch.bool),
        }
