"""CorrRISE: correlation-based randomised input sampling for face recognition.

Mery & Morris, "On Black-Box Explanation for Face Verification", WACV 2022, as used for the
face baselines of FAME (Zhang & Guenther, CVPR Workshops 2026, arXiv 2605.12017).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from facexai.explain.base import Explainer, check_positive
from facexai.explain.registry_instance import register_explainer
from facexai.explain.targets import Target


@register_explainer("corrrise")
class CorrRISE(Explainer):
    """CorrRISE: per-pixel Spearman correlation between random keep-masks and the target score.

    ``n_masks`` binary keep-masks are drawn, each hiding ``n_patches`` square patches of side
    ``patch_size`` whose top-left corners are uniform over the positions where the patch fits
    (patches may overlap). Every image is scored under every mask with forward passes only,
    ``batch_size`` masked images per pass. Per pixel, the map is the Spearman correlation between
    the pixel's keep value (1 kept, 0 hidden) and the score over the masks: the Pearson
    correlation of the keep values with the ranks of the scores (a binary variable's ranks are an
    increasing affine function of it, so ranking it changes nothing). Pixels that no mask hides,
    or samples whose score never changes, have no defined correlation and get 0 (NaN -> 0).

    Sign and target mode: the base post-processing keeps the positive part, so a
    :class:`~facexai.explain.ClassTarget` or a "similar"
    :class:`~facexai.explain.SimilarityTarget` gives e+ = clamp(corr(keep, s), 0): what supports
    the score. A "dissimilar" target scores 1 - s; its ranks are those of s reversed, so its
    correlation is exactly -corr(keep, s) and the map is e- = clamp(-corr(keep, s), 0), computed
    from the same similar-score correlate as the paper.

    What "black" is: hidden pixels are set to ``fill`` in the space of the tensor the model
    receives. The default 0.0 is the mean colour for ImageNet-style normalisation and mid-gray
    for images scaled to [-1, 1]; for literally black patches pass the normalised value of black,
    e.g. ``fill=-1.0`` for (x - 127.5) / 127.5 faces, or per channel
    ``fill=(-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225)`` for ImageNet statistics.

    Masks depend only on (``seed``, image size and the options), never on the batch: they are
    drawn by a CPU generator (identical on every device) and shared by all images, so maps are
    reproducible and batch-invariant.

    Args:
        n_masks: number of random masks (paper: 500); at least 2.
        patch_size: side of each hidden square, in pixels (paper: 30); at most the image side.
        n_patches: patches per mask (paper: 3).
        seed: seed of the mask generator.
        fill: value of hidden pixels, a number or one number per channel (see above).
        batch_size: masked images per forward pass.
    """

    not_exportable = (
        "it scores n_masks masked copies of every image in a Python loop whose length depends on the batch size"
    )

    def __init__(
        self,
        n_masks: int = 500,
        patch_size: int = 30,
        n_patches: int = 3,
        seed: int = 0,
        fill: float | Sequence[float] = 0.0,
        batch_size: int = 64,
    ) -> None:
        check_positive("n_masks", n_masks, integer=True)
        if n_masks < 2:
            raise ValueError(f"n_masks must be at least 2 to correlate, got {n_masks}")
        check_positive("patch_size", patch_size, integer=True)
        check_positive("n_patches", n_patches, integer=True)
        check_positive("batch_size", batch_size, integer=True)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        self.n_masks = n_masks
        self.patch_size = patch_size
        self.n_patches = n_patches
        self.seed = seed
        self.fill = _check_fill(fill)
        self.batch_size = batch_size

    def explain(self, model: nn.Module, images: Tensor, target: Target) -> Tensor:
        """Per-pixel Spearman correlations (N, H, W) of the keep-masks with the scores."""
        keep = self.masks(images.shape[-2], images.shape[-1], images.device)
        with torch.no_grad():
            scores = self._scores(model, images, target, keep)
        return spearman_maps(scores.view(len(images), self.n_masks), keep)

    def masks(self, height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
        """The seeded keep-masks (n_masks, height, width): 1 where kept, 0 inside a patch."""
        if self.patch_size > min(height, width):
            raise ValueError(
                f"patch_size={self.patch_size} does not fit images of size {height}x{width}; "
                f"use a patch_size of at most {min(height, width)}"
            )
        generator = torch.Generator().manual_seed(self.seed)
        shape = (self.n_masks, self.n_patches, 1)
        top = torch.randint(0, height - self.patch_size + 1, shape, generator=generator).to(device)
        left = torch.randint(0, width - self.patch_size + 1, shape, generator=generator).to(device)
        rows = _inside(torch.arange(height, device=device), top, self.patch_size)
        cols = _inside(torch.arange(width, device=device), left, self.patch_size)
        hidden = torch.zeros(self.n_masks, height, width, dtype=torch.bool, device=device)
        for patch in range(self.n_patches):
            hidden |= rows[:, patch, :, None] & cols[:, patch, None, :]
        return (~hidden).float()

    def _scores(self, model: nn.Module, images: Tensor, target: Target, keep: Tensor) -> Tensor:
        """Target scores of every (image, mask) pair, flat in image-major order (N * n_masks,)."""
        fill = torch.as_tensor(self.fill, dtype=images.dtype, device=images.device).view(-1, 1, 1)
        flat = torch.arange(len(images) * self.n_masks, device=images.device)
        chunks = []
        for rows in flat.split(self.batch_size):
            sample, mask = rows // self.n_masks, rows % self.n_masks
            kept = keep[mask][:, None]
            masked = images[sample] * kept + fill * (1 - kept)
            chunks.append(target.select(sample)(model(masked)))
        return torch.cat(chunks)


def _inside(positions: Tensor, start: Tensor, size: int) -> Tensor:
    """Boolean (M, P, L): whether each of the L positions lies in [start, start + size)."""
    return (positions >= start) & (positions < start + size)


def _check_fill(fill: float | Sequence[float]) -> float | tuple[float, ...]:
    values = [fill] if isinstance(fill, (int, float)) and not isinstance(fill, bool) else fill
    if (
        not isinstance(values, Sequence)
        or len(values) not in (1, 3)
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    ):
        raise ValueError(f"fill must be a finite number or three finite numbers (RGB), got {fill!r}")
    return float(values[0]) if len(values) == 1 else tuple(float(v) for v in values)


def average_ranks(scores: Tensor) -> Tensor:
    """Ranks 1..M along the last dimension of (N, M), ties sharing their mean rank."""
    n, m = scores.shape
    ordered, order = scores.sort(dim=1)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    offsets = torch.arange(n, device=scores.device)[:, None] * m
    group = (starts.cumsum(dim=1) - 1 + offsets).flatten()
    positions = torch.arange(1, m + 1, dtype=torch.float32, device=scores.device).repeat(n)
    means = torch.zeros(n * m, dtype=torch.float32, device=scores.device)
    means = means.scatter_reduce(0, group, positions, reduce="mean", include_self=False)
    return torch.empty_like(means).view(n, m).scatter_(1, order, means[group].view(n, m))


def spearman_maps(scores: Tensor, keep: Tensor) -> Tensor:
    """Per-pixel Spearman correlation (N, H, W) of keep-masks (M, H, W) with scores (N, M).

    Undefined correlations (a constant mask pixel or constant scores) are 0.
    """
    ranks = average_ranks(scores)
    ranks = ranks - ranks.mean(dim=1, keepdim=True)
    kept = keep - keep.mean(dim=0)
    numerator = torch.einsum("nm,mhw->nhw", ranks, kept)
    scale = ranks.norm(dim=1)[:, None, None] * kept.norm(dim=0)[None]
    corr = numerator / torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.where(scale > 0, corr, torch.zeros_like(corr))
