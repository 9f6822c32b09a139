r"""Random access to the records of an indexed RecordIO pair, checked against the index.

``train.idx`` holds text lines ``"<key>\t<byte offset>"``; it is read into numpy arrays (not a
dict) so DataLoader workers share it, and every offset is checked against the ``.rec`` file before
a record is read, so a truncated or forged pair fails with a message naming file and record.
"""

from __future__ import annotations

import os
import re
import reprlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from facexai.data.recordio.format import IRHeader, RecordIOError, read_framed, read_framed_extent, unpack_payload

#: Index keys and offsets are stored as int64 (numpy), as MXNet does.
_INT64_MAX = 2**63 - 1
_INDEX_FIELD = re.compile(r"[+-]?[0-9]{1,19}")


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
    r"""Random access to the raw payloads of an indexed RecordIO pair.

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
        """Size of the ``.rec`` file in bytes when it was opened (offsets are checked against it)."""
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
        """Close this process's file handle (reopened on next access)."""
        self._file.close()
