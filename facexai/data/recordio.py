"""Pure-Python reader and writer for MXNet indexed RecordIO face datasets.

The large public face-recognition training sets (MS1M, Glint360K, WebFace, CASIA as repackaged by
insightface) ship as ``train.rec`` + ``train.idx`` written by MXNet/dmlc. Installing MXNet only to
read them is not an option any more (it is unmaintained and has no wheels for current Pythons), so
this module re-implements the small on-disk format:

* ``train.idx``: text lines ``"<key>\\t<byte offset>"``.
* ``train.rec``: records framed as ``uint32 magic (0xced7230a)``, ``uint32 lrec`` (upper 3 bits a
  continuation flag, lower 29 bits the payload length), the payload, zero padding to 4 bytes. A
  payload that contains the magic word at a 4-byte aligned position is split there (dmlc does this
  so a reader can resynchronise); the parts carry flags 1 (first), 2 (middle), 3 (last) and the
  reader puts the magic word back between them.
* A payload starts with an ``IRHeader`` (``uint32 flag, float32 label, uint64 id, uint64 id2``).
  ``flag > 0`` means ``flag`` float32 labels follow the header and the scalar label is unused.
* Record 0 of insightface/arcface_torch sets is a header whose label array is
  ``[first identity record, end identity record]``; images are the records ``1 .. first-1`` and
  every identity record ``k`` holds ``[first image, end image)`` of that identity.

Everything is little-endian, as written by the x86 builds that produced the public sets.
"""

from __future__ import annotations

import logging
import math
import os
import re
import reprlib
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from facexai import files
from facexai.data.transforms import normalise
from facexai.writing import atomic_path, refuse_inputs

log = logging.getLogger(__name__)

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_FRAME = struct.Struct("<II")
_IR_HEADER = struct.Struct("<IfQQ")
_MAX_LENGTH = (1 << 29) - 1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: Index keys and offsets are stored as int64 (numpy), as MXNet does.
_INT64_MAX = 2**63 - 1
_INDEX_FIELD = re.compile(r"[+-]?[0-9]{1,19}")
#: Class labels are float32 in the IRHeader, which holds every integer only up to 2**24; a larger
#: label cannot be told from its neighbours, so it marks a corrupt record (Glint360K has 360k).
MAX_LABEL = 2**24


class IRHeader(NamedTuple):
    """Header at the start of every record payload (MXNet's ``IRHeader``).

    ``label`` is a float for ``flag == 0`` and a tuple of ``flag`` floats otherwise.
    """

    flag: int
    label: float | tuple[float, ...]
    id: int
    id2: int


class RecordIOError(ValueError):
    """A ``.rec``/``.idx`` pair is malformed; the message names the file and the record."""


# --------------------------------------------------------------------------- payload codec


def pack_payload(label: float | Sequence[float], data: bytes = b"", id: int = 0, id2: int = 0) -> bytes:
    """Prefix ``data`` with an IRHeader the way ``mxnet.recordio.pack`` does.

    Args:
        label: A scalar class label, or a sequence of floats (stored after the header with
            ``flag = len(label)``, as insightface does for its header and identity records).
        data: The encoded image (or nothing for header records).
        id: Record id stored in the header.
        id2: Secondary id stored in the header.
    """
    if isinstance(label, (int, float, np.integer, np.floating)):
        return _IR_HEADER.pack(0, float(label), id, id2) + data
    values = np.asarray(label, dtype="<f4").reshape(-1)
    return _IR_HEADER.pack(values.size, 0.0, id, id2) + values.tobytes() + data


def unpack_payload(payload: bytes) -> tuple[IRHeader, bytes]:
    """Split a record payload into its IRHeader and the remaining bytes (the encoded image).

    Raises:
        ValueError: If the payload is shorter than its header says.
    """
    if len(payload) < _IR_HEADER.size:
        raise ValueError(f"payload of {len(payload)} bytes is shorter than an IRHeader ({_IR_HEADER.size})")
    flag, label, rec_id, rec_id2 = _IR_HEADER.unpack_from(payload)
    rest = payload[_IR_HEADER.size :]
    if flag == 0:
        return IRHeader(0, label, rec_id, rec_id2), rest
    if len(rest) < 4 * flag:
        raise ValueError(f"IRHeader announces {flag} labels but only {len(rest)} bytes follow")
    labels = tuple(float(v) for v in np.frombuffer(rest, dtype="<f4", count=flag))
    return IRHeader(flag, labels, rec_id, rec_id2), rest[4 * flag :]


def _class_label(header: IRHeader) -> int:
    """Identity label of an image record: the scalar, or the first entry of a label array.

    Raises:
        ValueError: If the label is not a whole finite number (the caller names file and record).
    """
    return _whole_number(header.label if header.flag == 0 else header.label[0], "label")


def _whole_number(value: float, what: str) -> int:
    """``int(value)`` for finite whole floats; ``int()`` would raise OverflowError for inf and truncate 1.5."""
    if not math.isfinite(value) or not float(value).is_integer():
        raise ValueError(f"{what} {value:g} is not a whole number")
    return int(value)


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
    """Encode an RGB uint8 array; PNG (default) is lossless so round-trips are bit-exact."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {image.dtype} {image.shape}")
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"OpenCV could not encode an image as {ext!r}")
    return buf.tobytes()


# --------------------------------------------------------------------------- framing


def frame_record(payload: bytes) -> bytes:
    """Frame one payload as dmlc's ``RecordIOWriter::WriteRecord`` does (magic splitting included)."""
    if len(payload) > _MAX_LENGTH:
        raise ValueError(f"RecordIO records are limited to 2^29 - 1 bytes, got {len(payload)}")
    parts = _split_at_magic(payload)
    out = bytearray()
    for i, part in enumerate(parts):
        out += _FRAME.pack(MAGIC, (_continuation_flag(i, len(parts)) << 29) | len(part)) + part
    out += b"\0" * (-len(payload) % 4)
    return bytes(out)


def _continuation_flag(part: int, parts: int) -> int:
    """Dmlc's flags: 0 whole record, 1 first part, 2 middle part, 3 last part."""
    if parts == 1:
        return 0
    if part == 0:
        return 1
    return 3 if part == parts - 1 else 2


def _split_at_magic(payload: bytes) -> list[bytes]:
    """Cut the payload at every 4-byte aligned magic word, dropping the word itself."""
    parts, start = [], 0
    pos = payload.find(_MAGIC_BYTES)
    while pos != -1:
        if pos % 4 == 0:
            parts.append(payload[start:pos])
            start = pos + 4
            pos = payload.find(_MAGIC_BYTES, start)
        else:
            pos = payload.find(_MAGIC_BYTES, pos + 1)
    parts.append(payload[start:])
    return parts


def read_framed(fh: BinaryIO, offset: int, file_size: int) -> bytes:
    """Read the record starting at ``offset``, joining continuation parts.

    Raises:
        ValueError: For a bad magic word, an impossible continuation flag or a truncated record
            (the caller adds file name and record key to the message).
    """
    fh.seek(offset)
    out, position, first = bytearray(), offset, True
    while True:
        cflag, length = _read_frame_header(fh, position, file_size)
        if (cflag in (0, 1)) != first:
            raise ValueError(f"continuation flag {cflag} out of sequence at byte {position}")
        padded = (length + 3) & ~3
        if position + 8 + padded > file_size:
            raise ValueError(f"record truncated: needs bytes up to {position + 8 + padded}, file has {file_size}")
        data = fh.read(padded)
        if len(data) != padded:  # the file shrank after it was opened
            raise ValueError(f"record truncated: {len(data)} of {padded} payload bytes at byte {position + 8}")
        out += data[:length]
        position += 8 + padded
        if cflag in (0, 3):
            return bytes(out)
        out += _MAGIC_BYTES
        first = False


def read_framed_extent(fh: BinaryIO, offset: int, file_size: int) -> int:
    """Walk the frame headers of the record at ``offset`` without reading payloads; returns its end.

    Raises:
        ValueError: Same conditions as :func:`read_framed`.
    """
    position, first = offset, True
    while True:
        fh.seek(position)
        cflag, length = _read_frame_header(fh, position, file_size)
        if (cflag in (0, 1)) != first:
            raise ValueError(f"continuation flag {cflag} out of sequence at byte {position}")
        position += 8 + ((length + 3) & ~3)
        if position > file_size:
            raise ValueError(f"record truncated: needs bytes up to {position}, file has {file_size}")
        if cflag in (0, 3):
            return position
        first = False


def _read_frame_header(fh: BinaryIO, position: int, file_size: int) -> tuple[int, int]:
    """Read and check one 8-byte frame header; returns (continuation flag, payload length)."""
    if position + 8 > file_size:
        raise ValueError(f"record truncated: header at byte {position} runs past the end ({file_size} bytes)")
    raw = fh.read(8)
    if len(raw) != 8:
        raise ValueError(f"record truncated: header at byte {position} is cut short")
    magic, lrec = _FRAME.unpack(raw)
    if magic != MAGIC:
        raise ValueError(f"bad magic 0x{magic:08x} at byte {position} (expected 0x{MAGIC:08x})")
    cflag = lrec >> 29
    if cflag > 3:
        raise ValueError(f"invalid continuation flag {cflag} at byte {position}")
    return cflag, lrec & _MAX_LENGTH


# --------------------------------------------------------------------------- index + file


def read_index(idx_path: Path) -> dict[int, int]:
    """Parse ``train.idx`` into ``{key: byte offset}``, in file order.

    Raises:
        FileNotFoundError: If the index does not exist.
        RecordIOError: For a malformed line (the message names file and line number).
    """
    if not idx_path.is_file():
        raise FileNotFoundError(f"RecordIO index not found: {idx_path}")
    index: dict[int, int] = {}
    with idx_path.open("r", encoding="ascii", errors="replace") as fh:
        for line_no, line in enumerate(fh, start=1):
            if line.strip():
                key, offset = _index_line(line, f"{idx_path}: line {line_no}")
                index[key] = offset
    return index


def _index_line(line: str, where: str) -> tuple[int, int]:
    """``(key, offset)`` of one index line; both must fit int64 (the table stores them so)."""
    fields = line.split()
    if len(fields) != 2 or not all(_INDEX_FIELD.fullmatch(f) for f in fields):
        raise RecordIOError(f"{where} is not '<key>\\t<offset>': {reprlib.repr(line.strip())}")
    key, offset = int(fields[0]), int(fields[1])
    for name, value in (("key", key), ("offset", offset)):
        if not 0 <= value <= _INT64_MAX:
            raise RecordIOError(f"{where}: {name} {value} outside 0..2^63-1")
    return key, offset


class _LazyRecordFile:
    """A ``.rec`` file opened on first use in each process and never pickled.

    DataLoader workers receive a pickled copy of the dataset; sharing one OS file handle (and its
    seek position) between processes would interleave reads, so each process opens its own.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self._fh: BinaryIO | None = None
        self._pid: int | None = None

    def handle(self) -> BinaryIO:
        if self._fh is None or self._pid != os.getpid():
            # A handle inherited through fork shares its seek position with the parent: drop it
            # (closing only this process's descriptor) and open a private one.
            self.close()
            self._fh = self.path.open("rb")
            self._pid = os.getpid()
        return self._fh

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh = None

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "_fh": None, "_pid": None}


class OffsetTable:
    """``train.idx`` as two numpy arrays instead of a dict.

    A dict of millions of Python ints in a Dataset is copied page by page into every forked
    DataLoader worker as reference counts are touched (the "copy-on-read" problem); numpy arrays
    are not, so MS1M-sized indexes stay shared.
    """

    def __init__(self, index: dict[int, int]) -> None:
        self.order = np.fromiter(index.keys(), dtype=np.int64, count=len(index))
        offsets = np.fromiter(index.values(), dtype=np.int64, count=len(index))
        sort = np.argsort(self.order, kind="stable")
        self._keys, self._offsets = self.order[sort], offsets[sort]

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Offsets of ``keys`` (vectorised), -1 where a key is not indexed."""
        keys = np.asarray(keys, dtype=np.int64)
        if not len(self._keys):
            return np.full(keys.shape, -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        return np.where(self._keys[pos] == keys, self._offsets[pos], -1)

    def __contains__(self, key: int) -> bool:
        return bool(self.lookup(np.asarray([key]))[0] >= 0)


class IndexedRecordReader:
    """Random access to the raw payloads of an indexed RecordIO pair.

    Args:
        rec_path: The ``.rec`` file.
        idx_path: The ``.idx`` file.
    """

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike) -> None:
        self.rec_path, self.idx_path = Path(rec_path), Path(idx_path)
        if not self.rec_path.is_file():
            raise FileNotFoundError(f"RecordIO file not found: {self.rec_path}")
        self.index = OffsetTable(read_index(self.idx_path))
        self._file = _LazyRecordFile(self.rec_path)

    @property
    def file_size(self) -> int:
        return self._file.size

    def keys(self) -> np.ndarray:
        """Record keys (int64) in index-file order, as MXNet's ``MXIndexedRecordIO.keys``."""
        return self.index.order.copy()

    def read(self, key: int) -> bytes:
        """Raw payload of record ``key``.

        Raises:
            RecordIOError: Naming the ``.rec`` file and the record for any framing problem.
        """
        offset = self._offset(key)
        try:
            return read_framed(self._file.handle(), offset, self._file.size)
        except ValueError as exc:
            raise RecordIOError(f"{self.rec_path}: record {key} (offset {offset}): {exc}") from None

    def read_header(self, key: int) -> tuple[IRHeader, bytes]:
        """IRHeader and encoded image of record ``key``."""
        try:
            return unpack_payload(self.read(key))
        except RecordIOError:
            raise
        except ValueError as exc:
            raise RecordIOError(f"{self.rec_path}: record {key}: {exc}") from None

    def check(self, key: int) -> None:
        """Check the framing of record ``key`` from its frame headers only (no payload read).

        Raises:
            RecordIOError: Naming the ``.rec`` file and the record.
        """
        offset = self._offset(key)
        try:
            read_framed_extent(self._file.handle(), offset, self._file.size)
        except ValueError as exc:
            raise RecordIOError(f"{self.rec_path}: record {key} (offset {offset}): {exc}") from None

    def check_indexed(self, keys: np.ndarray) -> None:
        """Fail early, without reading records, if keys are missing or point past the end of the file."""
        offsets = self.index.lookup(keys)
        missing = np.flatnonzero(offsets < 0)
        if missing.size:
            raise RecordIOError(
                f"{self.idx_path}: {missing.size} record(s) not in the index (first: record {int(keys[missing[0]])})"
            )
        past = np.flatnonzero(offsets > self._file.size - 8)  # offsets + 8 could overflow int64
        if past.size:
            key = int(keys[past[0]])
            raise RecordIOError(
                f"{self.rec_path}: record {key} starts at offset {int(offsets[past[0]])}, past the end of the "
                f"file ({self._file.size} bytes; index {self.idx_path}). Is the .rec truncated?"
            )

    def _offset(self, key: int) -> int:
        offset = int(self.index.lookup(np.asarray([key]))[0])
        if offset < 0:
            raise RecordIOError(f"{self.idx_path}: no record {key} in the index (used with {self.rec_path})")
        return offset

    def close(self) -> None:
        self._file.close()


# --------------------------------------------------------------------------- dataset


def apply_transform(transform: Callable[..., Any] | None, image: np.ndarray) -> np.ndarray:
    """Apply a numpy-image transform: albumentations-style (``t(image=x)["image"]``) or plain ``t(x)``.

    Raises:
        TypeError: If the transform does not return an HxWx3 uint8 numpy array.
    """
    if transform is None:
        return image
    # albumentations refuses positional images; everything else gets the plain call.
    is_albumentations = type(transform).__module__.split(".")[0] == "albumentations"
    out = transform(image=image) if is_albumentations else transform(image)
    if isinstance(out, Mapping):
        out = out["image"]
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.ndim != 3 or out.shape[2] != 3:
        desc = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise TypeError(
            f"transform must return an HxWx3 uint8 numpy image (normalisation happens after it), got {desc}"
        )
    return out


@dataclass
class _CorruptLog:
    """Distinct corrupt records seen by this process, so skipping is counted, never silent."""

    keys: dict[int, str] = field(default_factory=dict)

    def add(self, key: int, reason: str) -> None:
        if key in self.keys:
            return
        self.keys[key] = reason
        log.warning("Skipping corrupt record: %s; %d corrupt record(s) skipped so far", reason, len(self.keys))


class RecordIODataset(Dataset):
    """Face images and identity labels from an insightface ``train.rec``/``train.idx`` pair.

    Follows arcface_torch's ``MXFaceDataset``: if record 0 is a header (``flag > 0``) the images are
    records ``1 .. label[0] - 1`` and there are ``label[1] - label[0]`` identities; otherwise every
    indexed record is an image and the identity count is ``max(label) + 1``.

    Args:
        root: Folder holding ``train.rec`` and ``train.idx``.
        transform: Optional callable on the HxWx3 uint8 RGB numpy image (for example an
            albumentations ``Compose``), applied before normalisation.
        skip_corrupt: If False (default) a corrupt record raises a ``ValueError`` naming the file
            and record. If True, structurally broken records (index past the end, bad magic, cut
            file) are found by a cheap header scan at construction and left out; records that fail
            to decode are replaced by the next readable record when read. Both are logged with a
            running count and listed in :attr:`corrupt_records` (per process: DataLoader workers
            count and log their own). Record 0 (the header) must be readable either way.

    Items are dicts ``{"image": float32 (3, H, W) in [-1, 1], "label": int64 scalar tensor}``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable[..., Any] | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        self.root = Path(root)
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self.reader = IndexedRecordReader(self.root / "train.rec", self.root / "train.idx")
        self._corrupt = _CorruptLog()
        self._num_classes: int | None = None
        self.keys = self._image_keys()
        if skip_corrupt:
            self.keys = self._drop_broken(self.keys)
        else:
            self.reader.check_indexed(self.keys)
        if not len(self.keys):
            raise RecordIOError(f"{self.reader.rec_path}: no readable image records")

    # -- layout -----------------------------------------------------------------------------

    def _image_keys(self) -> np.ndarray:
        """Image record keys: the header's range, or every indexed record if there is no header."""
        if 0 not in self.reader.index:
            return self.reader.keys()
        header, _ = self.reader.read_header(0)
        if header.flag == 0:
            return self.reader.keys()
        first_identity, end_identity = self._identity_range(header)
        keys = np.arange(1, first_identity, dtype=np.int64)
        missing = np.flatnonzero(self.reader.index.lookup(keys) < 0)
        if missing.size:
            raise RecordIOError(
                f"{self.reader.idx_path}: header record 0 announces images 1..{first_identity - 1} but "
                f"{missing.size} are not indexed (first: record {int(keys[missing[0]])})"
            )
        self._num_classes = end_identity - first_identity
        return keys

    def _identity_range(self, header: IRHeader) -> tuple[int, int]:
        """``[first identity record, end identity record)`` of header record 0, checked against the index.

        Images are records ``1 .. first - 1`` and each identity has at least one, so a range is
        only plausible if those records fit in the index and there are no more identities than
        images; anything else is a corrupt or forged header (``[1e12, 1e12]`` would otherwise
        ask for a 7 TiB key array).
        """
        where = f"{self.reader.rec_path}: record 0"
        if header.flag < 2:
            raise RecordIOError(
                f"{where}: header flag {header.flag}: an insightface header needs two labels "
                "[first identity record, end identity record]"
            )
        try:
            first, end = (_whole_number(v, "identity range bound") for v in header.label[:2])
        except ValueError as exc:
            raise RecordIOError(f"{where}: {exc} (range {list(header.label[:2])})") from None
        if first < 1 or end < first:
            raise RecordIOError(f"{where} header has an invalid identity range {header.label}")
        records = len(self.reader.index)
        if first > records:
            raise RecordIOError(
                f"{where}: identity range {first}..{end}: first identity record {first} lies past the images, "
                f"but {self.reader.idx_path} has only {records} records"
            )
        if end - first > first - 1:
            raise RecordIOError(
                f"{where}: identity range {first}..{end} announces {end - first} identities but only {first - 1} images"
            )
        return first, end

    def _drop_broken(self, keys: np.ndarray) -> np.ndarray:
        """Header-only scan (no payload reads) dropping records whose framing is broken."""
        kept = []
        for key in keys.tolist():
            try:
                self.reader.check(key)
            except RecordIOError as exc:
                self._corrupt.add(key, str(exc))
                continue
            kept.append(key)
        if len(kept) < len(keys):
            log.warning(
                "%s: left out %d structurally corrupt record(s) of %d",
                self.reader.rec_path,
                len(keys) - len(kept),
                len(keys),
            )
        return np.asarray(kept, dtype=np.int64)

    @property
    def num_classes(self) -> int:
        """Number of identities (from the header record, or one pass over the labels if absent)."""
        if self._num_classes is None:
            self._num_classes = max(self.read_label(i) for i in range(len(self))) + 1
        return self._num_classes

    @property
    def corrupt_records(self) -> dict[int, str]:
        """``{record key: reason}`` of corrupt records skipped so far in this process."""
        return dict(self._corrupt.keys)

    @property
    def corrupt_count(self) -> int:
        """How many corrupt records were skipped so far in this process."""
        return len(self._corrupt.keys)

    # -- access -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.keys)

    def read_label(self, index: int) -> int:
        """Identity label of item ``index`` without decoding its image."""
        key = self._key(index)
        header, _ = self.reader.read_header(key)
        return self._checked_label(header, key)

    def _key(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.reader.rec_path} ({len(self)} images)")
        return int(self.keys[index])

    def _checked_label(self, header: IRHeader, key: int) -> int:
        """Label of an image record; out-of-range labels would only surface later as CUDA asserts."""
        try:
            label = _class_label(header)
        except ValueError as exc:
            raise RecordIOError(f"{self.reader.rec_path}: record {key}: {exc}") from None
        end = MAX_LABEL if self._num_classes is None else self._num_classes
        if not 0 <= label < end:
            limit = "the header's identities" if self._num_classes is not None else "float32's exact integers"
            raise RecordIOError(f"{self.reader.rec_path}: record {key}: label {label} outside 0..{end - 1} ({limit})")
        return label

    def read_image(self, index: int) -> tuple[np.ndarray, int]:
        """Decoded RGB uint8 image (H, W, 3) and label of item ``index``, no transform applied.

        Raises:
            RecordIOError: If the record is corrupt or its image cannot be decoded.
        """
        key = self._key(index)
        header, data = self.reader.read_header(key)
        try:
            image = decode_image(data)
        except files.ImageFileError as exc:
            raise RecordIOError(f"{self.reader.rec_path}: record {key}: {exc}") from None
        if image is None:
            raise RecordIOError(
                f"{self.reader.rec_path}: record {key}: image data ({len(data)} bytes) cannot be decoded"
            )
        return image, self._checked_label(header, key)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, label = self._read_or_skip(index)
        image = apply_transform(self.transform, image)
        return {"image": normalise(image), "label": torch.tensor(label, dtype=torch.long)}

    def _read_or_skip(self, index: int) -> tuple[np.ndarray, int]:
        """Read item ``index``; with ``skip_corrupt`` fall through to the next readable item."""
        if not self.skip_corrupt:
            return self.read_image(index)
        self._key(index)  # out-of-range indices must raise, not wrap around
        index %= len(self)
        for step in range(len(self)):
            candidate = (index + step) % len(self)
            try:
                return self.read_image(candidate)
            except RecordIOError as exc:
                self._corrupt.add(int(self.keys[candidate]), str(exc))
        raise RecordIOError(f"{self.reader.rec_path}: every image record is corrupt")

    def close(self) -> None:
        """Close this process's file handle (reopened on next access)."""
        self.reader.close()


# --------------------------------------------------------------------------- writer


class RecordIOWriter:
    """Writes an indexed RecordIO pair (``train.rec`` + ``train.idx``) readable by MXNet and here.

    Use as a context manager; :meth:`write` appends one payload under a key. Both files are
    written to hidden temporaries beside the targets and renamed over them only when the block
    ends without an error (or :meth:`close` is called), so a failure half-way (an undecodable
    image, a full disk, Ctrl-C) leaves an existing set untouched.

    Args:
        root: Output folder (created if missing); existing ``train.rec``/``train.idx`` are replaced.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._files = ExitStack()
        with ExitStack() as opening:  # an error while opening removes what was already created
            opening.enter_context(self._files)
            rec_partial = self._files.enter_context(atomic_path(self.root / "train.rec"))
            idx_partial = self._files.enter_context(atomic_path(self.root / "train.idx"))
            self._rec = self._files.enter_context(rec_partial.open("wb"))
            self._idx = self._files.enter_context(idx_partial.open("w", encoding="ascii", newline="\n"))
            opening.pop_all()
        self._keys: set[int] = set()
        self._first: tuple[int, int] | None = None  # (offset, framed length) of the first record

    def write(self, key: int, payload: bytes) -> None:
        """Append a raw payload (an IRHeader plus data, see :func:`pack_payload`) under ``key``."""
        if key in self._keys:
            raise ValueError(f"{self.root / 'train.rec'}: record key {key} written twice")
        self._keys.add(key)
        framed = frame_record(payload)
        if self._first is None:
            self._first = (self._rec.tell(), len(framed))
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        self._rec.write(framed)

    def rewrite_first(self, payload: bytes) -> None:
        """Replace the first record written by ``payload`` of the same framed size (a header
        placeholder filled in once the counts are known).
        """
        framed = frame_record(payload)
        if self._first is None or self._first[1] != len(framed):
            raise RecordIOError(f"{self.root / 'train.rec'}: no first record of {len(framed)} bytes to rewrite")
        end = self._rec.tell()
        self._rec.seek(self._first[0])
        self._rec.write(framed)
        self._rec.seek(end)

    def write_image(
        self, key: int, image: np.ndarray | bytes, label: float | Sequence[float], ext: str = ".png"
    ) -> None:
        """Append an image (RGB uint8 array, encoded with ``ext``, or already-encoded bytes)."""
        data = image if isinstance(image, (bytes, bytearray)) else encode_image(image, ext)
        self.write(key, pack_payload(label, bytes(data), id=key))

    def close(self) -> None:
        """Finish: close both files and rename them into place."""
        self._files.close()

    def __enter__(self) -> RecordIOWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        # Passing the exception on makes atomic_path delete the temporaries instead of renaming.
        self._files.__exit__(*exc)


def write_face_records(
    root: str | os.PathLike, samples: Iterable[tuple[np.ndarray | bytes, int]], ext: str = ".png"
) -> tuple[int, int]:
    """Write (image, label) samples in the insightface layout: header, images, identity records.

    Samples must be grouped by label (all images of an identity together, labels ``0..K-1`` in
    order), because identity records store contiguous ``[first, end)`` image ranges. Nothing
    replaces an existing set unless every sample was written.

    Returns:
        ``(number of images, number of identities)``.
    """
    images, ranges = 0, []
    with RecordIOWriter(root) as writer:
        writer.write(0, pack_payload([0.0, 0.0]))  # placeholder, rewritten below once sizes are known
        for key, (image, label) in enumerate(samples, start=1):
            _extend_ranges(ranges, int(label), key, Path(root))
            writer.write_image(key, image, float(label), ext)
            images = key
        first_identity = images + 1
        for offset, (start, end) in enumerate(ranges):
            writer.write(first_identity + offset, pack_payload([float(start), float(end)], id=first_identity + offset))
        writer.rewrite_first(pack_payload([float(first_identity), float(first_identity + len(ranges))]))
    return images, len(ranges)


def _extend_ranges(ranges: list[list[int]], label: int, key: int, root: Path) -> None:
    """Track contiguous ``[first, end)`` image ranges per identity; labels must be 0, 1, 2, ..."""
    if ranges and label == len(ranges) - 1:
        ranges[-1][1] = key + 1
    elif label == len(ranges):
        ranges.append([key, key + 1])
    else:
        raise ValueError(
            f"{root}: samples must be grouped by label 0..K-1 in order; got label {label} after {len(ranges) - 1}"
        )


@dataclass(frozen=True)
class PackResult:
    """What :func:`pack_image_folder` wrote."""

    num_images: int
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def pack_image_folder(folder: str | os.PathLike, out_root: str | os.PathLike) -> PackResult:
    """Pack ``folder/<identity>/<image>`` into ``out_root/train.rec`` + ``train.idx``.

    Identities are the sorted subfolder names (label = position); image bytes are stored as they
    are (no re-encoding, so no quality loss) after checking that they decode.

    Raises:
        FileNotFoundError: If ``folder`` does not exist.
        facexai.writing.OverwriteInputError: If ``out_root`` is ``folder`` or inside it (the output
            would land among the images it is made from).
        ValueError: If an image cannot be decoded (naming it) or no images are found; an existing
            set in ``out_root`` is then left as it was.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    refuse_inputs(out_root, [folder], what="pack-rec output folder")
    classes = _identity_files(folder)
    if not classes:
        raise ValueError(f"{folder}: no identity subfolders with images ({', '.join(IMAGE_EXTENSIONS)})")
    count, _ = write_face_records(out_root, _checked_samples(classes))
    log.info("Packed %d images of %d identities from %s into %s", count, len(classes), folder, out_root)
    return PackResult(count, tuple(name for name, _ in classes))


def _identity_files(folder: Path) -> list[tuple[str, list[Path]]]:
    """Sorted (identity, sorted image files) pairs; empty identity folders are reported and skipped."""
    result = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in sub.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if files:
            result.append((sub.name, files))
        else:
            log.warning("Identity folder %s has no images; it gets no label", sub)
    return result


def _checked_samples(classes: list[tuple[str, list[Path]]]) -> Iterator[tuple[bytes, int]]:
    for label, (_, files) in enumerate(classes):
        for path in files:
            data = path.read_bytes()
            try:
                decoded = decode_bgr(data)
            except files.ImageFileError as exc:
                raise files.ImageFileError(f"{path}: {exc}") from None
            if decoded is None:
                raise ValueError(f"{path}: not a decodable image")
            yield data, label
