"""Image folders on disk: classification folders, identity folders and LFW-style pairs files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
from PIL import Image, UnidentifiedImageError
from torch import Tensor
import torch
from torch.utils.data import Dataset

from facexai.data.transforms import apply, normalise

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


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


def scan_class_folders(root: str | Path) -> tuple[list[Path], list[int], list[str]]:
    """Files and labels of ``root/<class>/<image>``, classes sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Data folder not found: {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"{root} has no class sub-folders; expected root/<class>/<image files>")
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        files += found
        labels += [label] * len(found)
    if not files:
        raise ValueError(f"{root} has class folders but no images with extensions {', '.join(IMAGE_EXTENSIONS)}")
    return files, labels, classes


class ImageFileDataset(Dataset):
    """Items ``{"image", "label"}`` read from files, resized to ``image_size``."""

    def __init__(self, files: list[Path], labels: list[int], image_size: int, transform: A.Compose | None = None) -> None:
        self.files, self.labels, self.image_size, self.transform = files, labels, image_size, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image, _ = apply(self.transform, load_image(self.files[index], self.image_size))
        return {"image": normalise(image), "label": torch.tensor(self.labels[index])}


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
    - ``path_a path_b issame``: explicit relative paths and 0/1 (the plain form).

    Raises:
        ValueError: naming the line number for malformed lines; FileNotFoundError naming the
            missing images when ``check_files``.
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
        missing = sorted({str(p) for pair in pairs for p in (pair.path_a, pair.path_b) if not p.is_file()})
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise FileNotFoundError(f"Pairs file {pairs_file} references {len(missing)} missing images: {shown}")
    return pairs


def _lfw_path(root: Path, name: str, number: str) -> Path:
    return root / name / f"{name}_{int(number):04d}.jpg"


def _parse_pair(tokens: list[str], root: Path, source: Path, line: int) -> Pair:
    where = f"{source}:{line}"
    if len(tokens) == 3 and tokens[1].isdigit() and tokens[2].isdigit():
        return Pair(_lfw_path(root, tokens[0], tokens[1]), _lfw_path(root, tokens[0], tokens[2]), True)
    if len(tokens) == 4 and tokens[1].isdigit() and tokens[3].isdigit():
        return Pair(_lfw_path(root, tokens[0], tokens[1]), _lfw_path(root, tokens[2], tokens[3]), False)
    if len(tokens) == 3 and tokens[2] in ("0", "1"):
        return Pair(root / tokens[0], root / tokens[1], tokens[2] == "1")
    raise ValueError(
        f"Malformed pairs line {where}: {' '.join(tokens)!r}; expected 'name i j', "
        "'name1 i name2 j' or 'path_a path_b 0|1'"
    )


class PairFileDataset(Dataset):
    """Items ``{"image_a", "image_b", "issame"}`` from a list of :class:`Pair`."""

    def __init__(self, pairs: list[Pair], image_size: int) -> None:
        self.pairs, self.image_size = pairs, image_size

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = self.pairs[index]
        return {
            "image_a": normalise(load_image(pair.path_a, self.image_size)),
            "image_b": normalise(load_image(pair.path_b, self.image_size)),
            "issame": torch.tensor(pair.issame),
        }
