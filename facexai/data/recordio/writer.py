"""Writing indexed RecordIO pairs: the atomic writer, the insightface layout, and ``pack-rec``."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from facexai import files
from facexai.data.image_codec import decode_bgr, encode_image
from facexai.data.recordio.format import RecordIOError, frame_record, pack_payload
from facexai.files import IMAGE_EXTENSIONS
from facexai.writing import atomic_path, refuse_inputs

log = logging.getLogger(__name__)


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
        """Replace the first record written by ``payload`` of the same framed size.

        The insightface header is written first as a placeholder and filled in here once the
        image and identity counts are known.
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

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        # Passing the exception on makes atomic_path delete the temporaries instead of renaming.
        self._files.__exit__(exc_type, exc, traceback)


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
    images = 0
    ranges: list[list[int]] = []
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
        """Number of identities packed (one label per identity folder with images)."""
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
        images = sorted(p for p in sub.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if images:
            result.append((sub.name, images))
        else:
            log.warning("Identity folder %s has no images; it gets no label", sub)
    return result


def _checked_samples(classes: list[tuple[str, list[Path]]]) -> Iterator[tuple[bytes, int]]:
    """(encoded bytes, label) of every image, each decoded once first: a bad file fails naming itself."""
    for label, (_, paths) in enumerate(classes):
        for path in paths:
            data = path.read_bytes()
            try:
                decoded = decode_bgr(data)
            except files.ImageFileError as exc:
                raise files.ImageFileError(f"{path}: {exc}") from None
            if decoded is None:
                raise ValueError(f"{path}: not a decodable image")
            yield data, label
