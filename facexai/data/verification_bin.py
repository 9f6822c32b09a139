"""insightface verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...).

A ``.bin`` set is a pickle of ``(list of encoded images, list of issame bools)``: images ``2i`` and
``2i + 1`` form pair ``i``. The public files were written by Python 2 (image bytes pickled as
``str``), later ones by Python 3 (``bytes``).

Pickles can run arbitrary code on load, and these files are downloaded from mirrors and forums, so
they are read with an unpickler whose ``find_class`` refuses every global: only opcodes that build
builtin containers, bytes, strings, numbers and bools can succeed, so nothing is imported, called
or executed. Files that need a global (numpy arrays, Python 3 bytes saved with protocol < 3)
are refused with a message naming the file; re-save them with protocol >= 3 from plain bytes.

Hostile files can also attack memory instead of code: a length field claiming a terabyte, a memo
index that makes the unpickler size its table by it, or one image referenced a million times
through the memo. Before unpickling, an opcode scan (:mod:`pickletools`, which builds nothing)
checks every length against the bytes left in the file and refuses opcodes a set cannot contain;
after it, image entries may not add up to more bytes than the file. Reading a ``.bin`` therefore
costs memory proportional to its size (the fuzz suite bounds Python's peak at 16x the file
plus 1 MiB; decoding adds the images themselves). Every refusal is a :class:`VerificationBinError`.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from facexai.data.image_codec import decode_image, encode_image
from facexai.data.transforms import normalise
from facexai.writing import atomic_path


class VerificationBinError(ValueError):
    """A ``.bin`` set is unsafe, malformed or too large for its file; the message names the file.

    A ValueError so callers written before it existed keep working.
    """


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for a global (a class or function) and was refused."""


#: Opcodes a ``.bin`` needs: containers of bytes/str/numbers/bools, the memo, framing. Anything
#: else (dicts, sets, floats, globals, calls) cannot be part of a valid set, so it is refused by
#: the opcode scan before the unpickler allocates anything.
_ALLOWED_OPCODES = frozenset(
    "PROTO FRAME STOP MARK EMPTY_LIST LIST APPEND APPENDS EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 "
    "STRING BINSTRING SHORT_BINSTRING BINBYTES SHORT_BINBYTES BINBYTES8 BYTEARRAY8 "
    "UNICODE SHORT_BINUNICODE BINUNICODE BINUNICODE8 NONE NEWTRUE NEWFALSE "
    "INT BININT BININT1 BININT2 LONG LONG1 LONG4 PUT BINPUT LONG_BINPUT MEMOIZE GET BINGET LONG_BINGET".split()
)
#: Opcodes that import or call something: the reason pickles are dangerous.
_CALL_OPCODES = frozenset(
    "GLOBAL STACK_GLOBAL INST OBJ REDUCE BUILD NEWOBJ NEWOBJ_EX PERSID BINPERSID EXT1 EXT2 EXT4".split()
)
_CONTAINER_OPCODES = frozenset("EMPTY_LIST LIST TUPLE TUPLE1 TUPLE2 TUPLE3".split())
_MEMO_PUT_OPCODES = frozenset("PUT BINPUT LONG_BINPUT".split())
#: A valid set is one tuple of two lists, nested two marks deep; these leave room for other
#: writers while keeping a hostile file from making a million empty containers or marks.
MAX_CONTAINERS = 16
MAX_MARK_DEPTH = 8


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Unpickler that cannot import anything, hence cannot call anything."""

    def find_class(self, module: str, name: str) -> Any:
        raise UnsafePickleError(f"refusing global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing persistent id")


class _ClampedReader:
    """Reads of at most the bytes left in the file, so a claimed 1 TB length never allocates 1 TB."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self._fh, self._size = fh, size

    def read(self, n: int = -1) -> bytes:
        left = max(0, self._size - self._fh.tell())
        return self._fh.read(left if n is None or n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self._fh.readline()

    def tell(self) -> int:
        return self._fh.tell()


@dataclass
class _OpcodeBudget:
    """What the scan has seen so far, checked against the limits of a valid set."""

    path: Path
    size: int
    containers: int = 0
    marks: int = 0
    memo_entries: int = 0
    strings: list[str] = field(default_factory=list)

    def check(self, name: str, arg: Any, pos: int) -> None:
        where = f"{self.path}: pickle opcode {name} at byte {pos}"
        if name in _CALL_OPCODES:
            raise _unsafe(self.path, f"refusing global {self._global_name(name, arg)}")
        if name not in _ALLOWED_OPCODES:
            raise VerificationBinError(f"{where} cannot occur in a verification .bin (only lists of bytes and bools)")
        if name == "FRAME" and arg > self.size - pos - 9:
            raise VerificationBinError(f"{where} claims {arg} bytes but only {self.size - pos - 9} follow")
        if name in ("STRING", "SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            self.strings = [*self.strings[-1:], str(arg)[:200]]
        self._count(name, arg, where)

    def _count(self, name: str, arg: Any, where: str) -> None:
        if name in _CONTAINER_OPCODES:
            self.containers += 1
            if self.containers > MAX_CONTAINERS:
                raise VerificationBinError(f"{where}: more than {MAX_CONTAINERS} lists/tuples")
        if name == "MARK":
            self.marks += 1
            if self.marks > MAX_MARK_DEPTH:
                raise VerificationBinError(f"{where}: MARKs nested more than {MAX_MARK_DEPTH} deep")
        elif name in ("APPENDS", "LIST", "TUPLE"):
            self.marks -= 1
        if name in _MEMO_PUT_OPCODES or name == "MEMOIZE":
            index = self.memo_entries if name == "MEMOIZE" else arg
            # Picklers number memo entries 0, 1, 2, ...; a jump would make the unpickler size its
            # memo table by the index (LONG_BINPUT 2**32 - 1 asks for 32 GiB).
            if index > self.memo_entries:
                raise VerificationBinError(f"{where}: memo index {index} skips ahead of the {self.memo_entries} stored")
            self.memo_entries += 1

    def _global_name(self, name: str, arg: Any) -> str:
        if name == "STACK_GLOBAL" and len(self.strings) == 2:
            return ".".join(self.strings)
        return str(arg).replace(" ", ".") if arg is not None else f"(opcode {name})"


def _unsafe(path: Path, reason: str) -> VerificationBinError:
    return VerificationBinError(
        f"{path}: unsafe or unsupported verification .bin ({reason}); only builtin lists, tuples, "
        "bytes and bools are accepted (numpy arrays or protocol-2 Python 3 bytes need a global)"
    )


def _scan_opcodes(path: Path, size: int) -> None:
    """Walk the opcodes without building objects; refuse what a valid set cannot contain.

    Every counted length (BINBYTES8, BINUNICODE8, FRAME, ...) is checked against the bytes left
    in the file here, before the real unpickler would allocate it.
    """
    budget = _OpcodeBudget(path, size)
    with path.open("rb") as fh:
        reader, next_op = _ClampedReader(fh, size), 0
        try:
            # typeshed asks for IO[bytes]; genops calls only read, readline and tell, which the
            # clamped reader provides (and tell() makes every position an int, never None).
            for opcode, arg, pos in pickletools.genops(reader):  # type: ignore[arg-type]
                budget.check(opcode.name, arg, reader.tell() if pos is None else pos)
                next_op = reader.tell()
        except VerificationBinError:
            raise
        except ValueError as exc:  # pickletools: unknown opcode, length past the end, no STOP
            raise VerificationBinError(
                f"{path}: not a readable verification .bin pickle ({_opcode_at(fh, next_op)}: {exc})"
            ) from None


def _opcode_at(fh: BinaryIO, pos: int) -> str:
    """Name the opcode starting at ``pos`` for an error message."""
    fh.seek(pos)
    code = fh.read(1).decode("latin-1")
    names = {op.code: op.name for op in pickletools.opcodes}
    return f"opcode {names.get(code, repr(code))} at byte {pos}"


def _safe_unpickle(path: Path) -> Any:
    """Unpickle ``path`` without globals; ``encoding="bytes"`` keeps Python 2 ``str`` as bytes."""
    _scan_opcodes(path, path.stat().st_size)
    with path.open("rb") as fh:
        try:
            return _NoGlobalsUnpickler(fh, encoding="bytes").load()
        except UnsafePickleError as exc:
            raise _unsafe(path, str(exc)) from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
            raise VerificationBinError(
                f"{path}: not a readable verification .bin pickle ({type(exc).__name__}: {exc})"
            ) from None


def read_verification_bin(path: str | os.PathLike) -> tuple[list[bytes], list[bool]]:
    """Encoded image bytes and issame flags of a ``.bin`` set, validated but not decoded.

    Memory stays proportional to the file: lengths are checked against the file before anything
    is allocated, and image entries may not add up to more bytes than the file holds (a pickle can
    reference one object many times through its memo).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        VerificationBinError: Naming the file, for unsafe pickles, a wrong structure or a count mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"verification .bin not found: {path}")
    obj = _safe_unpickle(path)
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise VerificationBinError(f"{path}: expected a pickled pair (images, issame), got {_describe(obj)}")
    images = _as_byte_list(obj[0], path)
    issame = _as_bool_list(obj[1], path)
    if len(images) != 2 * len(issame):
        raise VerificationBinError(f"{path}: {len(images)} images for {len(issame)} pairs (expected {2 * len(issame)})")
    return images, issame


def _describe(obj: Any) -> str:
    """Type name plus a short repr, so a hostile object never floods the message."""
    if isinstance(obj, (list, tuple)):
        return f"{type(obj).__name__} of {len(obj)}"
    return type(obj).__name__


def _as_byte_list(items: Any, path: Path) -> list[bytes]:
    if not isinstance(items, (list, tuple)):
        raise VerificationBinError(f"{path}: images must be a list, got {_describe(items)}")
    total = 0
    for i, item in enumerate(items):
        if not isinstance(item, (bytes, bytearray)):
            raise VerificationBinError(f"{path}: image {i} is {type(item).__name__}, expected encoded bytes")
        total += len(item)
    size = path.stat().st_size
    if total > size:
        raise VerificationBinError(
            f"{path}: the images hold {total} bytes in total but the file has only {size} bytes; "
            "entries repeat one object through pickle memo references, refusing to expand them"
        )
    return [bytes(item) for item in items]


def _as_bool_list(items: Any, path: Path) -> list[bool]:
    if not isinstance(items, (list, tuple)):
        raise VerificationBinError(f"{path}: issame must be a list, got {_describe(items)}")
    for i, item in enumerate(items):
        # Python 2 protocol-0 pickles may hold 0/1 ints; anything else is a malformed file.
        if not isinstance(item, (bool, int)) or item not in (0, 1):
            raise VerificationBinError(f"{path}: issame[{i}] is {reprlib.repr(item)}, expected a bool")
    return [bool(item) for item in items]


def _decode_or_raise(data: bytes, path: Path, index: int) -> np.ndarray:
    image = decode_image(data)
    if image is None:
        raise VerificationBinError(f"{path}: image {index} ({len(data)} bytes) cannot be decoded")
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
        VerificationBinError: Naming the file (and image), for unsafe or malformed pickles or undecodable
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
        The written path (replaced atomically: an error leaves any previous file untouched).
    """
    path = Path(path)
    if len(images) != 2 * len(issame):
        raise ValueError(f"{path}: {len(images)} images for {len(issame)} pairs (expected {2 * len(issame)})")
    encoded = [bytes(im) if isinstance(im, (bytes, bytearray)) else encode_image(im, ext) for im in images]
    flags = [bool(flag) for flag in issame]
    # Written beside the target and renamed on success: a failure never leaves half a set behind.
    with atomic_path(path) as partial, partial.open("wb") as fh:
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
