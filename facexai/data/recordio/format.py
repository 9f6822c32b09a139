"""The on-disk format of MXNet's indexed RecordIO: payload headers and record framing.

* ``train.rec``: records framed as ``uint32 magic (0xced7230a)``, ``uint32 lrec`` (upper 3 bits a
  continuation flag, lower 29 bits the payload length), the payload, zero padding to 4 bytes. A
  payload that contains the magic word at a 4-byte aligned position is split there (dmlc does this
  so a reader can resynchronise); the parts carry flags 1 (first), 2 (middle), 3 (last) and the
  reader puts the magic word back between them.
* A payload starts with an ``IRHeader`` (``uint32 flag, float32 label, uint64 id, uint64 id2``).
  ``flag > 0`` means ``flag`` float32 labels follow the header and the scalar label is unused.

Everything is little-endian, as written by the x86 builds that produced the public sets. The
index file and the insightface layout on top of these records are described in
:mod:`facexai.data.recordio`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import BinaryIO, NamedTuple

import numpy as np

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_FRAME = struct.Struct("<II")
_IR_HEADER = struct.Struct("<IfQQ")
_MAX_LENGTH = (1 << 29) - 1
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

    @property
    def labels(self) -> tuple[float, ...]:
        """The label values as a tuple either way: ``(label,)`` for a scalar, else the array."""
        return self.label if isinstance(self.label, tuple) else (self.label,)


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


def class_label(header: IRHeader) -> int:
    """Identity label of an image record: the scalar, or the first entry of a label array.

    Raises:
        ValueError: If the label is not a whole finite number (the caller names file and record).
    """
    return whole_number(header.labels[0], "label")


def whole_number(value: float, what: str) -> int:
    """``int(value)`` for finite whole floats; ``int()`` would raise OverflowError for inf and truncate 1.5."""
    if not math.isfinite(value) or not float(value).is_integer():
        raise ValueError(f"{what} {value:g} is not a whole number")
    return int(value)


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
