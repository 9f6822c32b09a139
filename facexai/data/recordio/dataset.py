"""The insightface training set as a Dataset: header record, image records, corrupt-record policy.

Record 0 of insightface/arcface_torch sets is a header whose label array is
``[first identity record, end identity record]``; images are the records ``1 .. first-1`` and
every identity record ``k`` holds ``[first image, end image)`` of that identity.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from facexai import files
from facexai.data.image_codec import decode_image
from facexai.data.recordio.format import MAX_LABEL, IRHeader, RecordIOError, class_label, whole_number
from facexai.data.recordio.reader import IndexedRecordReader
from facexai.data.transforms import normalise

log = logging.getLogger(__name__)


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
            first, end = (whole_number(v, "identity range bound") for v in header.labels[:2])
        except ValueError as exc:
            raise RecordIOError(f"{where}: {exc} (range {list(header.labels[:2])})") from None
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
            label = class_label(header)
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
