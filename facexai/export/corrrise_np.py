"""CorrRISE in numpy, so the torch-free audit can explain any ONNX face model as a black box.

The method is the one of :class:`facexai.explain.CorrRISE` (Mery & Morris, WACV 2022): draw
``n_masks`` binary keep-masks, each hiding ``n_patches`` squares of side ``patch_size`` whose
top-left corners are uniform over the positions where the square fits (squares may overlap);
score every image under every mask; per pixel, the map is the Spearman correlation between the
pixel's keep value and the score over the masks (Pearson correlation of the keep values with the
score ranks, ties sharing their mean rank). Undefined correlations (a pixel no mask hides, or a
constant score) are 0; the map is then ReLU'd and min-max normalised per image like every facexai
explainer.

The masks use numpy's generator instead of torch's, so for one seed the two implementations draw
different masks; given the same masks they compute the same maps (a test checks this against
the torch explainer). Only numpy is imported here: a test asserts that the audit never imports
torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np

from facexai.export import audit_metrics as am

#: patch side of the paper at 112 px; :func:`default_patch_size` scales it to other sizes
PAPER_PATCH = 30
PAPER_SIDE = 112

#: ``(masked_images (B, C, H, W), sample_index (B,)) -> scores (B,)``
ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class CorrRiseOptions:
    """Settings of the black-box maps.

    Attributes:
        n_masks: random masks per image (paper: 500); at least 2 to correlate.
        patch_size: side of each hidden square in pixels; ``None`` scales the paper's 30 px at
            112 px to the image side (see :func:`default_patch_size`).
        n_patches: squares per mask (paper: 3).
        seed: seed of numpy's mask generator (masks depend only on it, the size and the options).
        batch_size: masked images per model call.
    """

    n_masks: int = 500
    patch_size: int | None = None
    n_patches: int = 3
    seed: int = 0
    batch_size: int = 64

    def check(self) -> None:
        """Raise ``ValueError`` naming the first bad option."""
        for name in ("n_masks", "n_patches", "batch_size"):
            _check_positive_int(name, getattr(self, name))
        if self.n_masks < 2:
            raise ValueError(f"n_masks must be at least 2 to correlate, got {self.n_masks}")
        if self.patch_size is not None:
            _check_positive_int("patch_size", self.patch_size)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

    def patch_for(self, side: int) -> int:
        """The patch side used on ``side`` x ``side`` images."""
        return default_patch_size(side) if self.patch_size is None else self.patch_size


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def default_patch_size(side: int) -> int:
    """The paper's 30 px patch at 112 px, scaled so a patch hides the same share of the face."""
    return max(1, round(PAPER_PATCH * side / PAPER_SIDE))


def masks_from_corners(top: np.ndarray, left: np.ndarray, patch_size: int, height: int, width: int) -> np.ndarray:
    """Keep-masks (M, H, W) float32: 0 inside any square [top, top + p) x [left, left + p), else 1.

    ``top`` and ``left`` are (M, P) corner rows and columns.
    """
    rows = (np.arange(height)[None, None, :] >= top[..., None]) & (np.arange(height) < top[..., None] + patch_size)
    cols = (np.arange(width)[None, None, :] >= left[..., None]) & (np.arange(width) < left[..., None] + patch_size)
    # numpy's stubs type any(axis=...) as "scalar or array"; with an axis it is an array
    hidden = cast(np.ndarray, (rows[:, :, :, None] & cols[:, :, None, :]).any(axis=1))
    return (~hidden).astype(np.float32)


def fitted_patch(options: CorrRiseOptions, height: int, width: int) -> int:
    """The patch side used on ``height`` x ``width`` images; ``ValueError`` if it does not fit."""
    patch = options.patch_for(min(height, width))
    if patch > min(height, width):
        raise ValueError(
            f"CorrRISE patch_size={patch} does not fit {height}x{width} images; use at most {min(height, width)}"
        )
    return patch


def corrrise_masks(options: CorrRiseOptions, height: int, width: int) -> np.ndarray:
    """The seeded keep-masks (n_masks, height, width) for images of that size.

    Raises:
        ValueError: the patch does not fit the image.
    """
    patch = fitted_patch(options, height, width)
    rng = np.random.default_rng(options.seed)
    shape = (options.n_masks, options.n_patches)
    top = rng.integers(0, height - patch + 1, shape)  # all rows first, then all columns
    left = rng.integers(0, width - patch + 1, shape)
    return masks_from_corners(top, left, patch, height, width)


def average_ranks(scores: np.ndarray) -> np.ndarray:
    """Ranks 1..M along the last axis of (N, M), ties sharing their mean rank."""
    return np.stack([am.average_ranks(values) for values in scores]).astype(np.float64, copy=False)


def spearman_maps(scores: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Per-pixel Spearman correlation (N, H, W) of keep-masks (M, H, W) with scores (N, M).

    Computed in float64; undefined correlations (constant pixel or constant scores) are 0.
    """
    ranks = average_ranks(np.asarray(scores, np.float64))
    ranks -= ranks.mean(axis=1, keepdims=True)
    kept = keep.astype(np.float64) - keep.mean(axis=0, dtype=np.float64)
    numerator = np.einsum("nm,mhw->nhw", ranks, kept)
    scale = np.linalg.norm(ranks, axis=1)[:, None, None] * np.linalg.norm(kept, axis=0)[None]
    return np.where(scale > 0, numerator / np.where(scale > 0, scale, 1.0), 0.0)


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """ReLU then per-map min-max to [0, 1] (constant maps become zeros), float32."""
    maps = np.maximum(maps, 0.0)
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)


def masked_scores(
    score_fn: ScoreFn, images: np.ndarray, keep: np.ndarray, fill: float | np.ndarray, batch_size: int
) -> np.ndarray:
    """Scores (N, M) of every image under every mask; hidden pixels take ``fill`` (input space)."""
    n, m = len(images), len(keep)
    fill = np.asarray(fill, images.dtype).reshape(-1, 1, 1)
    flat = np.arange(n * m)
    chunks = []
    for start in range(0, n * m, batch_size):
        rows = flat[start : start + batch_size]
        sample, mask = rows // m, rows % m
        kept = keep[mask][:, None]
        masked = images[sample] * kept + fill * (1 - kept)
        chunks.append(np.asarray(score_fn(masked.astype(images.dtype), sample), np.float64).reshape(-1))
    return np.concatenate(chunks).reshape(n, m)


def corrrise_maps(
    score_fn: ScoreFn,
    images: np.ndarray,
    options: CorrRiseOptions,
    fill: float | np.ndarray = 0.0,
    keep: np.ndarray | None = None,
) -> np.ndarray:
    """CorrRISE maps (N, H, W) in [0, 1] of graph inputs (N, C, H, W).

    Args:
        score_fn: the score to explain for masked images of the given samples (e.g. the cosine
            similarity of their embedding to the partner's clean embedding).
        images: graph inputs, already normalised.
        options: mask and batching settings.
        fill: value of hidden pixels in input space, a number or one per channel (0 is the mean
            colour for (x - mean) / std inputs).
        keep: masks to use instead of drawing them (tests compare implementations on equal masks).
    """
    options.check()
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {images.shape}")
    if not math.isfinite(float(np.sum(np.asarray(fill, np.float64)))):
        raise ValueError(f"fill must be finite, got {fill!r}")
    keep = corrrise_masks(options, *images.shape[-2:]) if keep is None else keep
    scores = masked_scores(score_fn, images, keep, fill, options.batch_size)
    return normalise_maps(spearman_maps(scores, keep))
