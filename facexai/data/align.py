"""Five-point face alignment to the ArcFace template, as insightface prepares its training data.

Recognition models trained on MS1M/Glint expect faces warped so that the eyes, nose tip and mouth
corners land on fixed template points (insightface's ``arcface_dst``). Feeding unaligned crops
silently costs accuracy and makes explanations drift, so the same similarity warp
(``insightface.utils.face_align.norm_crop``) is used here rather than a re-implementation.

Landmark files map image paths (relative to the source folder) to five ``(x, y)`` points in the
order left eye, right eye, nose, left mouth corner, right mouth corner (image coordinates):

* CSV: ``filename,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5`` (an optional header line is skipped);
* JSON: ``{"filename": [[x1, y1], ..., [x5, y5]], ...}``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import warnings
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
from tqdm.auto import tqdm

from facexai.data.recordio import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

_TEMPLATE_SIZES = (112, 128)


def _face_align():
    """insightface's face_align module, imported on use (importing insightface takes seconds)."""
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
        ValueError: Naming the file and the line (CSV) or key (JSON) of a malformed entry, or an
            unsupported extension.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"landmarks file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".json":
        return _read_json(path)
    raise ValueError(f"{path}: unsupported landmarks format {suffix!r}; use .csv or .json")


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    result: dict[str, np.ndarray] = {}
    with path.open("r", newline="", encoding="utf-8") as fh:
        for line_no, row in enumerate(csv.reader(fh), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            if line_no == 1 and _is_header(row):
                continue
            where = f"{path}: line {line_no}"
            if len(row) != 11:
                raise ValueError(f"{where}: expected 11 columns (filename,x1,y1,...,x5,y5), got {len(row)}")
            values = _parse_numbers(row[1:], where)
            _add_entry(result, row[0].strip(), np.asarray(values, dtype=np.float32).reshape(5, 2), where)
    return result


def _is_header(row: list[str]) -> bool:
    """A first row whose coordinate columns are not numbers is a header."""
    try:
        [float(cell) for cell in row[1:]]
    except ValueError:
        return True
    return False


def _parse_numbers(cells: list[str], where: str) -> list[float]:
    try:
        values = [float(cell) for cell in cells]
    except ValueError:
        raise ValueError(f"{where}: coordinates must be numbers, got {cells}") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{where}: coordinates must be finite, got {cells}")
    return values


def _read_json(path: Path) -> dict[str, np.ndarray]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object {{filename: [[x, y] * 5]}}, got {type(data).__name__}")
    result: dict[str, np.ndarray] = {}
    for name, points in data.items():
        where = f"{path}: entry {name!r}"
        if not (
            isinstance(points, list) and len(points) == 5 and all(isinstance(p, list) and len(p) == 2 for p in points)
        ):
            raise ValueError(f"{where}: expected five [x, y] pairs, got {points!r}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for p in points for v in p):
            raise ValueError(f"{where}: coordinates must be numbers, got {points!r}")
        values = _parse_numbers([str(v) for p in points for v in p], where)
        _add_entry(result, name.strip(), np.asarray(values, dtype=np.float32).reshape(5, 2), where)
    return result


def _add_entry(result: dict[str, np.ndarray], name: str, points: np.ndarray, where: str) -> None:
    """Store one entry, refusing empty, duplicate or escaping paths (they would write outside dst)."""
    if not name:
        raise ValueError(f"{where}: empty filename")
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts:
        raise ValueError(f"{where}: filename {name!r} must be relative to the image folder, without '..'")
    key = pure.as_posix()
    if key in result:
        raise ValueError(f"{where}: duplicate filename {name!r}")
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
        ValueError: For malformed landmark rows, images without a row, or unreadable images.
    """
    src, landmarks_file, dst = Path(src), Path(landmarks_file), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"image folder not found: {src}")
    landmarks = read_landmarks(landmarks_file)
    _check_coverage(src, landmarks_file, list(landmarks))
    for name, points in tqdm(landmarks.items(), desc="align", unit="img"):
        _align_one(src / name, dst / name, points, image_size)
    log.info("Aligned %d images from %s into %s", len(landmarks), src, dst)
    return len(landmarks)


def _align_one(source: Path, target: Path, points: np.ndarray, image_size: int) -> None:
    image = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{source}: not a readable image")
    aligned = align_face(image, points, image_size)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(target), aligned):
        raise ValueError(f"{target}: OpenCV could not write the aligned image")
