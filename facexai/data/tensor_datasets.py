"""Datasets over in-memory uint8 images: single images (with labels) and image pairs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from facexai.data.transforms import apply, normalise


class ImageTensorDataset(Dataset):
    """Items ``{"image", "label"[, "mask"]}`` from uint8 images (N, 3, H, W).

    Args:
        images: uint8 RGB images (N, 3, H, W).
        labels: class or identity per image (N,).
        masks: optional bool masks (N, H, W) of the regions that carry the label.
        transform: optional albumentations pipeline, applied to image and mask together.
    """

    def __init__(
        self, images: Tensor, labels: Tensor, masks: Tensor | None = None, transform: A.Compose | None = None
    ) -> None:
        if len(images) != len(labels) or (masks is not None and len(masks) != len(images)):
            raise ValueError("images, labels and masks must have the same length")
        self.images, self.labels, self.masks, self.transform = images, labels, masks, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image, mask = _augment(self.images[index], None if self.masks is None else self.masks[index], self.transform)
        item = {"image": image, "label": self.labels[index].long()}
        if mask is not None:
            item["mask"] = mask
        return item


class PairTensorDataset(Dataset):
    """Verification pairs ``{"image_a", "image_b", "issame"[, "mask_a", "mask_b"]}``.

    Args:
        images: uint8 RGB images (N, 3, H, W) the pairs index into.
        index_a: first image of each pair (P,).
        index_b: second image of each pair (P,).
        issame: genuine (True) or impostor pair (P,).
        masks: optional identity-region masks (N, H, W).
    """

    def __init__(
        self, images: Tensor, index_a: Tensor, index_b: Tensor, issame: Tensor, masks: Tensor | None = None
    ) -> None:
        if not len(index_a) == len(index_b) == len(issame):
            raise ValueError("index_a, index_b and issame must have the same length")
        self.images, self.masks = images, masks
        self.index_a, self.index_b, self.issame = index_a, index_b, issame.bool()

    def __len__(self) -> int:
        return len(self.issame)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        a, b = int(self.index_a[index]), int(self.index_b[index])
        item = {
            "image_a": normalise(self.images[a]),
            "image_b": normalise(self.images[b]),
            "issame": self.issame[index],
        }
        if self.masks is not None:
            item["mask_a"], item["mask_b"] = self.masks[a], self.masks[b]
        return item


class IndexedPairs(Dataset):
    """A pair dataset whose items also carry ``"index"``, the pair's position in the dataset.

    The LFW-style k-fold accuracy splits the pairs into contiguous folds in dataset order.
    Under DDP each process validates an interleaved, padded share of the pairs, and the
    gathered scores arrive rank by rank; with the index ``PairVerificationMetrics`` puts them
    back in dataset order and drops the padding, so the accuracy does not depend on the number
    of processes. A wrapper rather than a field of every pair dataset: the data modules add it
    to the validation loaders of any pair dataset (image files, ``.bin`` sets, tensors).

    Args:
        pairs: a map-style dataset of dict items (``image_a``, ``image_b``, ``issame``, ...).
    """

    def __init__(self, pairs: Dataset) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.pairs[index]
        if not isinstance(item, Mapping):
            source = type(self.pairs).__name__
            raise TypeError(f"IndexedPairs needs dict items, got {type(item).__name__} from {source}")
        if "index" in item:
            raise ValueError(
                f"{type(self.pairs).__name__} items already have an 'index' key; IndexedPairs would overwrite it"
            )
        return {**item, "index": index}


def _augment(image: Tensor, mask: Tensor | None, transform: A.Compose | None) -> tuple[Tensor, Tensor | None]:
    if transform is None:
        return normalise(image), mask
    hwc = image.permute(1, 2, 0).numpy()
    out, out_mask = apply(transform, hwc, None if mask is None else mask.numpy())
    return normalise(out), None if out_mask is None else torch.from_numpy(np.ascontiguousarray(out_mask))
