"""Five-point face alignment to the ArcFace template, as insightface prepares its training data.

Recognition models trained on MS1M/Glint expect faces warped so that the eyes, nose tip and mouth
corners land on fixed template points (insightface's ``arcface_dst``). Feeding unaligned crops
silently costs accuracy and makes explanations drift, so the same similarity warp
(``insightface.utils.face_align.norm_crop``) is used here rather than a re-implementation.

Landmark files map image paths (relative to the source folder) to five ``(x, y)`` points in the
order left eye, right eye, nose, left mouth corner, right mouth corner (image coordinates):

* CSV: ``filename,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5`` (an optional header line is skipped);
* JSON: ``{"filename": [[x1, y1], ..., [x5, y5]], ...}``.

Landmark files come from outside (detectors, downloads), so every malformed entry raises
:class:`LandmarksFileError` naming the file and line or key, never another exception type, and
:func:`align_folder` refuses to write into its source folder and replaces each output image
atomically.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import reprlib
import warnings
from pathlib import Path, PurePosixPath
from types import ModuleType

import cv2
import numpy as np
from tqdm.auto import tqdm

from facexai.data.image_codec import decode_bgr
from facexai.files import IMAGE_EXTENSIONS, ImageFileError, read_utf8_text
from facexai.writing import atomic_path, refuse_inputs

log = logging.getLogger(__name__)

_TEMPLATE_SIZES = (112, 128)


class LandmarksFileError(ValueError):
    """A landmarks file is malformed; the message names the file and the line (CSV) or key (JSON)."""


def _face_align() -> ModuleType:
    """Insightface's face_align module, imported on use (importing insightface takes seconds)."""
    from insightface.utils import face_align

    return face_align


def _check_inputs(landmarks5: np.ndarray, image_size: int) -> np.ndarray:
    """Validate what insightface only ``assert``s, returning float32 (5, 2) landmarks."""
    if image_size <= 0 or not any(image_size % base == 0 for base in _TEMPLATE_SIZES):
        raise ValueError(f"image_size must be a multiple of 112 or 128 (ArcFace template), got {image_size}")
    points = np.asarray(landmarks5, dtype=np.float32)
    if points.shape != (5, 2):
        raise ValueError(f"landmarks5 must have shape (5, 2), got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError(f"landmarks5 must be finite, got {points.tolist()}")
    return points


def alignment_matrix(landmarks5: np.ndarray, image_size: int = 112) -> np.ndarray:
    """The 2x3 similarity transform mapping ``landmarks5`` onto the ArcFace template.

    Returned so callers can map other points (or check the warp) with the exact matrix
    :func:`align_face` uses.
    """
    points = _check_inputs(landmarks5, image_size)
    with warnings.catch_warnings():
        # scikit-image >= 0.26 deprecates the estimate() call inside insightface; not ours to fix.
        warnings.filterwarnings("ignore", message=".*estimate.*deprecated", category=FutureWarning)
        return _face_align().estimate_norm(points, image_size)


def align_face(image: np.ndarray, landmarks5: np.ndarray, image_size: int = 112) -> np.ndarray:
    """Warp a face to the ArcFace template with insightface's ``norm_crop``.

    Args:
        image: HxWxC uint8 image (any channel order; the warp treats channels alike).
        landmarks5: ``(5, 2)`` points: left eye, right eye, nose, left and right mouth corners.
        image_size: Output side; a multiple of 112 (or 128, insightface's padded variant).

    Returns:
        The aligned ``(image_size, image_size, C)`` image, same dtype as the input.
    """
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        raise ValueError(
            f"image must be a non-empty HxW or HxWxC numpy array, got {getattr(image, 'shape', type(image))}"
        )
    points = _check_inputs(landmarks5, image_size)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*estimate.*deprecated", category=FutureWarning)
        return _face_align().norm_crop(image, points, image_size=image_size)


# --------------------------------------------------------------------------- landmark files


def read_landmarks(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read five-point landmarks from a ``.csv`` or ``.json`` file (see the module docstring).

    Returns:
        ``{relative image path: float32 (5, 2) array}`` in file order.

    Raises:
        FileNotFoundError: If the file does not exist.
        LandmarksFileError: Naming the file and the line (CSV) or key (JSON) of a malformed entry,
            text that is not UTF-8, or an unsupported extension.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"landmarks file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".json":
        return _read_json(path)
    raise LandmarksFileError(f"{path}: unsupported landmarks format {suffix!r}; use .csv or .json")


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    result: dict[str, np.ndarray] = {}
    reader = csv.reader(read_utf8_text(path, LandmarksFileError).splitlines())
    try:
        for row in reader:
            _csv_row(result, row, reader.line_num, path)
    except csv.Error as exc:  # e.g. a field above csv's 128 KiB limit
        raise LandmarksFileError(f"{path}: line {reader.line_num}: {exc}") from None
    return result


def _csv_row(result: dict[str, np.ndarray], row: list[str], line_no: int, path: Path) -> None:
    if not row or all(not cell.strip() for cell in row):
        return
    if line_no == 1 and _is_header(row):
        return
    where = f"{path}: line {line_no}"
    if len(row) != 11:
        raise LandmarksFileError(f"{where}: expected 11 columns (filename,x1,y1,...,x5,y5), got {len(row)}")
    _add_entry(result, row[0].strip(), _parse_points(row[1:], where), where)


def _is_header(row: list[str]) -> bool:
    """A first row whose coordinate columns are not numbers is a header."""
    try:
        [float(cell) for cell in row[1:]]
    except ValueError:
        return True
    return False


def _parse_points(cells: list[str], where: str) -> np.ndarray:
    """Ten coordinates as float32 (5, 2), finite after the cast.

    1e39 is a finite float64 but inf in float32, which the warp would only reject later, without
    naming the line.
    """
    try:
        values = [float(cell) for cell in cells]
    except ValueError:
        raise LandmarksFileError(f"{where}: coordinates must be numbers, got {reprlib.repr(cells)}") from None
    with np.errstate(over="ignore"):
        points = np.asarray(values, dtype=np.float32).reshape(5, 2)
    if not np.isfinite(points).all():
        raise LandmarksFileError(f"{where}: coordinates must be finite float32 numbers, got {reprlib.repr(cells)}")
    return points


def _read_json(path: Path) -> dict[str, np.ndarray]:
    text = read_utf8_text(path, LandmarksFileError)
    try:
        data = json.loads(text)
    except RecursionError:
        raise LandmarksFileError(f"{path}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, or an integer above Python's 4300-digit limit
        raise LandmarksFileError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise LandmarksFileError(f"{path}: expected an object {{filename: [[x, y] * 5]}}, got {type(data).__name__}")
    result: dict[str, np.ndarray] = {}
    for name, points in data.items():
        where = f"{path}: entry {reprlib.repr(name)}"
        if not (
            isinstance(points, list) and len(points) == 5 and all(isinstance(p, list) and len(p) == 2 for p in points)
        ):
            raise LandmarksFileError(f"{where}: expected five [x, y] pairs, got {reprlib.repr(points)}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for p in points for v in p):
            raise LandmarksFileError(f"{where}: coordinates must be numbers, got {reprlib.repr(points)}")
        _add_entry(result, name.strip(), _parse_points([str(v) for p in points for v in p], where), where)
    return result


def _add_entry(result: dict[str, np.ndarray], name: str, points: np.ndarray, where: str) -> None:
    """Store one entry, refusing empty, duplicate or escaping paths (they would write outside dst)."""
    if not name:
        raise LandmarksFileError(f"{where}: empty filename")
    if "\0" in name:
        raise LandmarksFileError(f"{where}: filename {reprlib.repr(name)} contains a NUL byte")
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts:
        raise LandmarksFileError(
            f"{where}: filename {reprlib.repr(name)} must be relative to the image folder, without '..'"
        )
    key = pure.as_posix()
    if key in result:
        raise LandmarksFileError(f"{where}: duplicate filename {reprlib.repr(name)}")
    result[key] = points


# --------------------------------------------------------------------------- folders


def _images_under(src: Path) -> set[str]:
    return {
        p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    }


def _check_coverage(src: Path, landmarks_file: Path, names: list[str]) -> None:
    """Every landmark row needs its image and every image needs a row; report both, not just one."""
    present = _images_under(src)
    missing_images = [n for n in names if not (src / n).is_file()]
    missing_rows = sorted(present - set(names))
    if missing_images:
        raise FileNotFoundError(
            f"{landmarks_file}: {len(missing_images)} listed image(s) not found under {src}: {_preview(missing_images)}"
        )
    if missing_rows:
        raise ValueError(
            f"{src}: {len(missing_rows)} image(s) have no landmark row in {landmarks_file}: {_preview(missing_rows)}"
        )


def _preview(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def align_folder(
    src: str | os.PathLike, landmarks_file: str | os.PathLike, dst: str | os.PathLike, image_size: int = 112
) -> int:
    """Align every image listed in ``landmarks_file`` from ``src`` into ``dst`` (same relative paths).

    Landmark rows and the presence of every image are checked before anything is written, so a
    bad row or a missing file does not leave a half-aligned folder behind. Images are written with
    their original file name and format.

    Args:
        src: Folder of unaligned images (subfolders such as ``identity/image.jpg`` are kept).
        landmarks_file: ``.csv`` or ``.json`` landmarks keyed by paths relative to ``src``.
        dst: Output folder (created).
        image_size: Output side, a multiple of 112 or 128.

    Returns:
        Number of images written.

    Raises:
        FileNotFoundError: If ``src``, the landmarks file, or a listed image is missing.
        facexai.writing.OverwriteInputError: If ``dst`` is ``src`` or inside it (the originals
            would be overwritten, or aligned images mixed with them).
        ValueError: For malformed landmark rows (:class:`LandmarksFileError`), images without a
            row, or unreadable or oversized images (:class:`facexai.files.ImageFileError`).
    """
    src, landmarks_file, dst = Path(src), Path(landmarks_file), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"image folder not found: {src}")
    refuse_inputs(dst, [src], what="align --dst")
    landmarks = read_landmarks(landmarks_file)
    _check_coverage(src, landmarks_file, list(landmarks))
    for name, points in tqdm(landmarks.items(), desc="align", unit="img"):
        _align_one(src / name, dst / name, points, image_size)
    log.info("Aligned %d images from %s into %s", len(landmarks), src, dst)
    return len(landmarks)


def _align_one(source: Path, target: Path, points: np.ndarray, image_size: int) -> None:
    """Align one image; the header is checked before decoding and the output replaced atomically."""
    try:
        image = decode_bgr(source.read_bytes())
    except ImageFileError as exc:
        raise ImageFileError(f"{source}: {exc}") from None
    if image is None:
        raise ImageFileError(f"{source}: not a readable image")
    aligned = align_face(image, points, image_size)
    with atomic_path(target) as partial:  # keeps the suffix, so OpenCV picks the same format
        if not cv2.imwrite(str(partial), aligned):
            raise ValueError(f"{target}: OpenCV could not write the aligned image")
