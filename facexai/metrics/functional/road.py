"""ROAD: Remove And Debias, ROAD's imputation and its score curves.

Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML
2022, arXiv 2202.00449.

Deleting pixels with a constant leaks the deletion mask's shape to the model, which then scores
the *mask* rather than the missing evidence. ROAD fills removed pixels by noisy linear
imputation: each removed pixel is the weighted mean of its 8 neighbours (1/6 direct, 1/12
diagonal), all removed pixels solved jointly, plus N(0, noise_std^2) noise, in [0, 1] pixel space.

The reference solves one sparse system per image on the CPU with scipy. Here the system
``(D - W_uu) x_u = W_uk v_k`` is solved for the whole batch at once with Jacobi-preconditioned
conjugate gradients, the operator being one 3x3 convolution; it is symmetric positive definite
whenever every hole touches a kept pixel (tests check it against ``scipy.sparse.linalg.spsolve``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from facexai.metrics.functional._checks import check_images_maps
from facexai.metrics.functional._reduce import count_of, mean_compute
from facexai.metrics.functional.perturbation import DEFAULT_CHUNK_SIZE, pixel_ranks, score_in_chunks

ORDERS = ("morf", "lerf")  # most / least relevant first
DEFAULT_PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def _stencil(device: torch.device, dtype: torch.dtype) -> Tensor:
    d, c = 1 / 6, 1 / 12
    return torch.tensor([[c, d, c], [d, 0.0, d], [c, d, c]], device=device, dtype=dtype).view(1, 1, 3, 3)


class _Neighbours:
    """The weighted sum of the 8 neighbours (the stencil), by shifted slices of a zero-bordered buffer.

    The same sum as ``F.conv2d(x, _stencil(...), padding=1)`` (to float64 rounding), about 3x
    faster on the CPU: a single-channel 3x3 convolution in float64 has no fast kernel there,
    and it is what every conjugate-gradient iteration applies.
    """

    DIAGONAL = 1 / 12

    def __init__(self, like: Tensor) -> None:
        self.buffer = like.new_zeros(*like.shape[:-2], like.shape[-2] + 2, like.shape[-1] + 2)

    def __call__(self, x: Tensor) -> Tensor:
        p = self.buffer
        p[..., 1:-1, 1:-1] = x
        # [[1, 2, 1], [2, 0, 2], [1, 2, 1]] / 12: the separable [1, 2, 1] x [1, 2, 1] less 4 x
        rows = torch.add(p[..., :-2, :], p[..., 2:, :]).add_(p[..., 1:-1, :], alpha=2)
        both = torch.add(rows[..., :-2], rows[..., 2:]).add_(rows[..., 1:-1], alpha=2)
        return both.sub_(x, alpha=4).mul_(self.DIAGONAL)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-system inner products of (B, 1, H, W) tensors, shape (B, 1, 1, 1)."""
    return torch.bmm(a.flatten(1).unsqueeze(1), b.flatten(1).unsqueeze(2)).view(-1, 1, 1, 1)


def _batched_pcg(apply_a: Callable[[Tensor], Tensor], b: Tensor, diag: Tensor, tol: float, max_iter: int) -> Tensor:
    """Jacobi-preconditioned CG on independent systems (B, 1, H, W); stops when all converge.

    In-place updates: every iteration reads and writes whole (B, 1, H, W) float64 tensors, so
    the number of passes over memory is its cost.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    z = r / diag
    p = z.clone()
    rz = _dot(r, z)
    b_norm = b.flatten(1).norm(dim=1).clamp(min=1e-30)
    for _ in range(max_iter):
        if (r.flatten(1).norm(dim=1) / b_norm).max() <= tol:
            break
        ap = apply_a(p)
        alpha = rz / _dot(p, ap).clamp(min=1e-30)
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, ap, value=-1)
        torch.div(r, diag, out=z)
        rz_next = _dot(r, z)
        p.mul_(rz_next / rz.clamp(min=1e-30)).add_(z)
        rz = rz_next
    return x


def linear_imputation(images: Tensor, removed: Tensor, tol: float = 1e-6, max_iter: int | None = None) -> Tensor:
    """Removed pixels replaced by the joint weighted mean of their neighbours (no noise).

    Args:
        images: (N, C, H, W), any value range; channels are imputed independently.
        removed: boolean (N, H, W), True where a pixel is removed.
        tol: relative residual at which conjugate gradients stop.
        max_iter: iteration cap (default 10 (H + W), ample for CG on this stencil).

    Returns:
        Images with removed pixels imputed and kept pixels unchanged. A hole with no kept
        neighbour at all (e.g. 100 % removed) has no defined mean and is filled with zeros.
    """
    n, c, h, w = images.shape
    values = images.reshape(n * c, 1, h, w).double()
    unknown = removed.to(images.device).repeat_interleave(c, dim=0).unsqueeze(1).double()
    kernel = _stencil(images.device, torch.float64)
    degree = F.conv2d(torch.ones_like(values[:1]), kernel, padding=1).expand_as(values)
    neighbours = _Neighbours(values)
    rhs = unknown * neighbours((1 - unknown) * values)

    def apply_a(x: Tensor) -> Tensor:
        # x is a search direction of CG: zero wherever a pixel is kept (exactly, see _batched_pcg's
        # updates from the masked right-hand side), so it needs no masking before the stencil.
        return (degree * x).sub_(neighbours(x)).mul_(unknown)

    diag = torch.where(unknown > 0, degree, 1.0)
    solved = _batched_pcg(apply_a, rhs, diag, tol, max_iter or 10 * (h + w))
    return torch.where(unknown > 0, solved, values).to(images.dtype).view(n, c, h, w)


def noisy_linear_imputation(
    images: Tensor, removed: Tensor, noise_std: float = 0.01, generator: torch.Generator | None = None
) -> Tensor:
    """ROAD's imputation: :func:`linear_imputation` plus N(0, noise_std^2) on removed pixels."""
    filled = linear_imputation(images, removed)
    noise = to_device(torch.randn(filled.shape, generator=generator, device="cpu"), filled) * noise_std
    return torch.where(removed.to(images.device).unsqueeze(1), filled + noise, filled)


def to_device(host: Tensor, like: Tensor) -> Tensor:
    """``host`` (made on the CPU: seeded noise that must not depend on the device) on ``like``'s device and dtype.

    To CUDA from pinned memory without blocking: the copy is ordered before the kernels that read
    it on the same stream, and the caching host allocator keeps the pinned buffer until it is done.
    """
    if like.device.type == "cuda":
        return host.pin_memory().to(like.device, like.dtype, non_blocking=True)
    return host.to(like)


def removal_masks(maps: Tensor, percentages: Sequence[float], order: str) -> Tensor:
    """Boolean (N, P, H, W): the top (``"morf"``) or bottom (``"lerf"``) p % pixels per map."""
    if order not in ORDERS:
        raise ValueError(f"Unknown order {order!r}. Available: {', '.join(ORDERS)}")
    p = torch.as_tensor(list(percentages), dtype=torch.float64, device=maps.device)
    if p.dim() != 1 or len(p) == 0 or (p < 0).any() or (p > 100).any():
        raise ValueError(f"percentages must be a non-empty list in [0, 100], got {list(percentages)}")
    n_pixels = maps.shape[-1] * maps.shape[-2]
    counts = torch.floor(p * n_pixels / 100).long().view(1, -1, 1, 1)
    ranks = pixel_ranks(maps).unsqueeze(1)
    return ranks < counts if order == "morf" else ranks >= n_pixels - counts


def road_curves(
    score_fn: Callable[..., Tensor],
    images: Tensor,
    maps: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    percentages: Sequence[float] = DEFAULT_PERCENTAGES,
    order: str = "morf",
    noise_std: float = 0.01,
    seed: int = 0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    with_index: bool = False,
) -> Tensor:
    """Scores after removing p % of the pixels (by the map) and imputing them ROAD's way.

    Args:
        score_fn: as in :func:`perturbation_curves`.
        images: normalised inputs (N, C, H, W).
        maps: explanations (N, H, W) at the input size.
        mean: per-channel normalisation mean, to impute in [0, 1] pixel space.
        std: per-channel normalisation std.
        percentages: removal percentages p.
        order: "morf" (most relevant first; lower is better) or "lerf" (least relevant first;
            higher is better).
        noise_std: standard deviation of the imputation noise in [0, 1] pixel space.
        seed: seeds the noise, so curves are reproducible.
        chunk_size: (sample, percentage) images imputed and scored at once.
        with_index: pass the sample index to ``score_fn``.

    Returns:
        Scores (N, len(percentages)).
    """
    maps = check_images_maps(images, maps)
    masks = removal_masks(maps, percentages, order)
    shape = (1, -1, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(shape)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(shape)
    n, n_p = masks.shape[:2]
    sample = torch.arange(n, device=images.device).repeat_interleave(n_p)
    generator = torch.Generator().manual_seed(seed)

    def build(jobs: Tensor) -> Tensor:
        pixels = images[sample[jobs]] * std_t + mean_t
        removed = masks.flatten(0, 1)[jobs]
        return (noisy_linear_imputation(pixels, removed, noise_std, generator) - mean_t) / std_t

    return score_in_chunks(score_fn, build, sample, chunk_size, with_index).view(n, n_p)


def _road_update(curves: Tensor, n_points: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Sum of per-sample mean scores, sample count and pointwise curve sum of one batch."""
    if curves.dim() != 2 or (n_points is not None and curves.shape[1] != n_points):
        expected = "(N, P)" if n_points is None else f"(N, {n_points})"
        raise ValueError(f"ROAD curves must have shape {expected}, got {tuple(curves.shape)}")
    if not curves.isfinite().all():
        raise ValueError("curves contain NaN or Inf")
    curves = curves.detach().float()
    return curves.mean(1).sum(), count_of(curves), curves.sum(0)


def road_score(curves: Tensor) -> Tensor:
    """Mean score over samples and removal percentages of :func:`road_curves` output.

    With equally spaced percentages this is the normalised area under the ROAD curve; for MoRF
    lower is better, for LeRF higher.
    """
    total, count, _ = _road_update(curves)
    return mean_compute(total, count)
