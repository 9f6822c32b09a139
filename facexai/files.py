"""Reading images and LFW-style pairs files without PyTorch.

Shared by the training data modules (:mod:`facexai.data.folders`) and the torch-free audit
(:mod:`facexai.export.audit`), so it imports only numpy and Pillow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Pair:
    """One verification pair: two image paths and whether they show the same person."""

    path_a: Path
    path_b: Path
    issame: bool


def read_pairs(pairs_file: str | Path, image_root: str | Path, check_files: bool = True) -> list[Pair]:
    """Parse an LFW-style pairs file.

    Accepted line forms (blank lines and ``#`` comments ignored):

    - an optional header ``n_folds n_pairs`` (LFW's 10-fold ``pairs.txt``) or ``n_pairs``;
    - ``name i j``: genuine pair ``root/name/name_000i.jpg`` and ``..._000j.jpg`` (LFW naming);
    - ``name1 i name2 j``: impostor pair in LFW naming;
    - ``path_a path_b issame``: explicit relative paths and 0/1.

    Raises:
        FileNotFoundError: the pairs file, or (with ``check_files``) images it names, are missing.
        ValueError: a malformed line (with its line number), or no pairs at all.
    """
    pairs_file, image_root = Path(pairs_file), Path(image_root)
    if not pairs_file.is_file():
        raise FileNotFoundError(f"Pairs file not found: {pairs_file}")
    lines = [(n, ln.split()) for n, ln in enumerate(pairs_file.read_text().splitlines(), 1)]
    lines = [(n, tok) for n, tok in lines if tok and not tok[0].startswith("#")]
    if lines and all(t.isdigit() for t in lines[0][1]) and len(lines[0][1]) <= 2:
        lines = lines[1:]
    pairs = [_parse_pair(tokens, image_root, pairs_file, n) for n, tokens in lines]
    if not pairs:
        raise ValueError(f"Pairs file {pairs_file} contains no pairs")
    if check_files:
        _check_exist(pairs, pairs_file)
    return pairs


def _check_exist(pairs: list[Pair], source: Path) -> None:
    missing = sorted({str(p) for pair in pairs for p in (pair.path_a, pair.path_b) if not p.is_file()})
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise FileNotFoundError(f"Pairs file {source} references {len(missing)} missing images: {shown}")


def _lfw_path(root: Path, name: str, number: str) -> Path:
    return root / name / f"{name}_{int(number):04d}.jpg"


def _parse_pair(tokens: list[str], root: Path, source: Path, line: int) -> Pair:
    if len(tokens) == 3 and tokens[1].isdigit() and tokens[2].isdigit():
        return Pair(_lfw_path(root, tokens[0], tokens[1]), _lfw_path(root, tokens[0], tokens[2]), True)
    if len(tokens) == 4 and tokens[1].isdigit() and tokens[3].isdigit():
        return Pair(_lfw_path(root, tokens[0], tokens[1]), _lfw_path(root, tokens[2], tokens[3]), False)
    if len(tokens) == 3 and tokens[2] in ("0", "1"):
        return Pair(root / tokens[0], root / tokens[1], tokens[2] == "1")
    raise ValueError(
        f"Malformed pairs line {source}:{line}: {' '.join(tokens)!r}; expected 'name i j', "
        "'name1 i name2 j' or 'path_a path_b 0|1'"
    )


def load_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """An RGB uint8 HWC image, optionally resized to ``size`` x ``size``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Image not found: {path}")
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"Corrupt or unreadable image file {path}: {err}") from err
