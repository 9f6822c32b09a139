"""Normalisation and albumentations augmentation presets, selectable by name in YAML."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch import Tensor

#: ArcFace/insightface input convention: (pixel - 127.5) / 127.5, RGB
MEAN = 0.5
STD = 0.5


def normalise(image: np.ndarray | Tensor) -> Tensor:
    """uint8 RGB, HWC numpy or CHW tensor, to a float CHW tensor in [-1, 1]."""
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    return (image.float() / 255.0 - MEAN) / STD


def denormalise(images: Tensor) -> Tensor:
    """Inverse of :func:`normalise`, to floats in [0, 1] (for display)."""
    return (images * STD + MEAN).clamp(0, 1)


def _face_preset() -> A.Compose:
    # Small geometric jitter only: aligned faces must stay aligned; erasing mimics occlusion.
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.Affine(scale=(0.95, 1.05), translate_percent=(-0.03, 0.03), rotate=(-8, 8), p=0.5),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5),
            A.GaussianBlur(blur_limit=(3, 5), p=0.1),
            A.CoarseDropout(num_holes_range=(1, 2), hole_height_range=(0.1, 0.2), hole_width_range=(0.1, 0.2), p=0.2),
        ]
    )


PRESETS: dict[str, Callable[[], A.Compose | None]] = {
    "none": lambda: None,
    "flip": lambda: A.Compose([A.HorizontalFlip(p=0.5)]),
    "face": _face_preset,
}


def build_augmentation(spec: str | dict[str, Any] | None) -> A.Compose | None:
    """An albumentations pipeline from a preset name or a serialised albumentations dict.

    Args:
        spec: ``None``/"none", a preset ("flip", "face"), or the dict form of
            ``albumentations.to_dict`` (``{"transform": {...}}``) for full control from YAML.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(f"Unknown augmentation preset {spec!r}. Available: {', '.join(PRESETS)}")
        return PRESETS[spec]()
    if isinstance(spec, dict):
        try:
            return A.from_dict(spec)
        except Exception as err:  # albumentations raises several types for bad specs
            raise ValueError(f"Invalid albumentations spec {spec!r}: {err}") from err
    raise TypeError(f"augmentation must be a preset name or an albumentations dict, got {type(spec).__name__}")


def apply(
    transform: A.Compose | None, image: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run an albumentations pipeline on an HWC uint8 image (and its mask, moved the same way)."""
    if transform is None:
        return image, mask
    if mask is None:
        return transform(image=image)["image"], None
    out = transform(image=image, mask=mask.astype(np.uint8))
    return out["image"], out["mask"].astype(bool)
