"""Image folders on disk: classification folders, identity folders and LFW-style pairs files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import albumentations as A
import torch
from torch import Tensor
from torch.utils.data import Dataset

from facexai.data.transforms import apply, normalise
from facexai.files import IMAGE_EXTENSIONS, ImageFileError, Pair, PairsFileError, load_image, read_pairs

__all__ = [
    "ImageFileDataset",
    "ImageFileError",
    "Pair",
    "PairFileDataset",
    "PairsFileError",
    "load_image",
    "read_pairs",
    "scan_class_folders",
]


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

    def __init__(
        self, files: list[Path], labels: list[int], image_size: int, transform: A.Compose | None = None
    ) -> None:
        self.files, self.labels, self.image_size, self.transform = files, labels, image_size, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image, _ = apply(self.transform, load_image(self.files[index], self.image_size))
        return {"image": normalise(image), "label": torch.tensor(self.labels[index])}


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
