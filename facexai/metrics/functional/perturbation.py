"""Deletion and insertion curves (Petsiuk et al., "RISE", BMVC 2018, arXiv 1806.07421).

Deletion replaces the most important pixels first with a baseline and watches the score fall;
insertion starts from the baseline and restores the most important pixels first. Pixels are
ordered by a *stable* descending sort of the map (ties broken by pixel index), so curves are
reproducible across devices and runs. This is the only model-dependent step of the faithfulness
metrics: it returns plain tensors that the Metric classes accumulate.

Every (sample, step) image is built on the fly from the pixel ranks and pushed through
``score_fn`` in chunks, so memory stays at ``chunk_size`` images whatever ``steps`` is.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision.transforms.functional as TF
from torch import Tensor

from facexai.metrics.functional._checks import (
    check_chunk_size,
    check_curves,
    check_images_maps,
    check_mode,
    check_steps,
)
from facexai.metrics.functional._reduce import count_of, mean_compute

BASELINES = ("zero", "blur", "mean")
# docs/metrics.md: deletion fills with zeros in normalised space (the mean colour); insertion starts
# from a blurred copy, as in RISE, so that the first point is not an out-of-distribution image.
DEFAULT_BASELINES = {"deletion": "zero", "insertion": "blur"}
BLUR_KERNEL = 11
BLUR_SIGMA = 5.0
DEFAULT_CHUNK_SIZE = 128

ScoreFn = Callable[..., Tensor]


def gaussian_blur(images: Tensor, kernel_size: int = BLUR_KERNEL, sigma: float = BLUR_SIGMA) -> Tensor:
    """Gaussian blur of images (N, C, H, W) by torchvision (reflect padding): the "blur" baseline.

    The same function FAME blurs with, so both use one definition; images smaller than half
    the kernel get a message that names the alternatives instead of a padding error.

    >>> gaussian_blur(torch.ones(1, 3, 16, 16)).allclose(torch.ones(1, 3, 16, 16))
    True
    """
    half = kernel_size // 2
    if min(images.shape[-2:]) <= half:
        raise ValueError(
            f"the blur baseline (kernel {kernel_size}) needs images larger than {half} pixels per "
            f"side, got {tuple(images.shape[-2:])}; use baseline='zero' or 'mean'"
        )
    return TF.gaussian_blur(images, [kernel_size, kernel_size], [sigma, sigma])


def resolve_baseline(baseline: str | Tensor | None, mode: str) -> str | Tensor:
    """The baseline actually used: ``None`` means the mode's default (zero / blur)."""
    check_mode(mode)
    if baseline is None:
        return DEFAULT_BASELINES[mode]
    if isinstance(baseline, str) and baseline not in BASELINES:
        raise ValueError(f"Unknown baseline {baseline!r}. Available: {', '.join(BASELINES)}")
    if not isinstance(baseline, (str, Tensor)):
        raise TypeError(f"baseline must be a name or a Tensor, got {type(baseline).__name__}")
    return baseline


def make_baseline(images: Tensor, baseline: str | Tensor) -> Tensor:
    """The image every removed pixel is taken from, same shape as ``images``.

    "zero": zeros (the mean colour for normalised inputs); "blur": Gaussian blur, kernel 11,
    sigma 5; "mean": each image's per-channel spatial mean; a Tensor broadcastable to the images
    is used as given.
    """
    if isinstance(baseline, Tensor):
        try:
            return baseline.to(images.device, images.dtype).expand_as(images)
        except RuntimeError:
            raise ValueError(
                f"baseline tensor of shape {tuple(baseline.shape)} does not broadcast to the "
                f"images {tuple(images.shape)}"
            ) from None
    if baseline == "zero":
        return torch.zeros_like(images)
    if baseline == "blur":
        return gaussian_blur(images)
    if baseline == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    raise ValueError(f"Unknown baseline {baseline!r}. Available: {', '.join(BASELINES)}")


def pixel_ranks(maps: Tensor) -> Tensor:
    """Position of each pixel in the stable descending order of its map, shape (N, H, W)."""
    flat = maps.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    positions = torch.arange(flat.shape[1], device=maps.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions).view_as(maps)


def step_counts(steps: int, n_pixels: int, device: torch.device | None = None) -> Tensor:
    """Pixels removed (deletion) or restored (insertion) after each step: floor(k * HW / steps)."""
    return torch.arange(steps + 1, device=device) * n_pixels // steps


def score_in_chunks(
    score_fn: ScoreFn,
    build: Callable[[Tensor], Tensor],
    sample: Tensor,
    chunk_size: int,
    with_index: bool,
) -> Tensor:
    """Score ``len(sample)`` virtual images, building and scoring ``chunk_size`` at a time.

    ``build(job_index)`` makes the images of those jobs; ``sample[job]`` is the sample each job
    belongs to, passed to ``score_fn`` as a second argument when ``with_index`` is true.
    """
    check_chunk_size(chunk_size)
    scores = []
    with torch.no_grad():
        for jobs in torch.arange(len(sample), device=sample.device).split(chunk_size):
            batch = build(jobs)
            out = score_fn(batch, sample[jobs]) if with_index else score_fn(batch)
            if not isinstance(out, Tensor) or out.shape != (len(jobs),):
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"score_fn must return one score per image ({len(jobs)},), got {shape}")
            scores.append(out.detach())
    return torch.cat(scores)


def _curve_grid(
    score_fn: ScoreFn,
    images: Tensor,
    maps: Tensor,
    steps: int,
    modes: tuple[str, ...],
    bases: list[Tensor],
    chunk_size: int,
    with_index: bool,
) -> Tensor:
    """Scores (len(modes), N, steps + 1), one curve per (mode, baseline).

    For ``modes == ("deletion", "insertion")`` insertion's last point (the clean image) is
    deletion's first and is not recomputed; with the same baseline object, the all-baseline
    image (deletion's last point, insertion's first) is shared as well.
    """
    n, _, h, w = images.shape
    ranks = pixel_ranks(maps).unsqueeze(1)
    counts = step_counts(steps, h * w, images.device)
    inserts = torch.tensor([m == "insertion" for m in modes], device=images.device)
    grid = torch.ones(len(modes), n, steps + 1, dtype=torch.bool, device=images.device)
    both = modes == ("deletion", "insertion")
    shared_end = both and bases[0] is bases[1]
    if both:
        grid[1, :, steps] = False
        grid[1, :, 0] = not shared_end
    curve, sample, step = grid.nonzero(as_tuple=True)
    stacked = torch.stack(bases)

    def build(jobs: Tensor) -> Tensor:
        s = sample[jobs]
        hidden = ranks[s] < counts[step[jobs]].view(-1, 1, 1, 1)
        take_base = hidden ^ inserts[curve[jobs]].view(-1, 1, 1, 1)
        return torch.where(take_base, stacked[curve[jobs], s], images[s])

    flat = score_in_chunks(score_fn, build, sample, chunk_size, with_index)
    scores = flat.new_empty(grid.shape)
    scores[grid] = flat
    if both:
        scores[1, :, steps] = scores[0, :, 0]
        if shared_end:
            scores[1, :, 0] = scores[0, :, steps]
    return scores


def perturbation_curves(
    score_fn: ScoreFn,
    images: Tensor,
    maps: Tensor,
    steps: int = 50,
    baseline: str | Tensor | None = None,
    mode: str = "deletion",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    with_index: bool = False,
) -> Tensor:
    """Score after each of ``steps`` equal chunks of pixels is deleted or inserted.

    Args:
        score_fn: maps an image batch (B, C, H, W) to scores (B,). Called under
            ``torch.no_grad()`` on chunks that mix samples; if ``with_index`` it is called as
            ``score_fn(images, index)`` with ``index`` (B,) the sample of each image, so
            per-sample targets (class labels, partner embeddings) can be looked up.
        images: normalised inputs (N, C, H, W).
        maps: explanations (N, H, W) or (N, 1, H, W) at the input size; larger = more important.
        steps: number of chunks; step k perturbs floor(k * H * W / steps) pixels.
        baseline: "zero", "blur" (Gaussian, kernel 11, sigma 5), "mean" or a Tensor
            broadcastable to the images. ``None`` (default) takes the mode's default from
            ``DEFAULT_BASELINES``: "zero" for deletion, "blur" for insertion (``docs/metrics.md``, RISE).
        mode: "deletion" (start at x, replace top pixels by the baseline) or "insertion" (start
            at the baseline, restore top pixels of x).
        chunk_size: images per ``score_fn`` call.
        with_index: pass the sample index to ``score_fn`` (see above).

    Returns:
        Scores (N, steps + 1), both ends included, on the device ``score_fn`` returns.
    """
    maps = check_images_maps(images, maps)
    check_steps(steps)
    base = make_baseline(images, resolve_baseline(baseline, mode))
    return _curve_grid(score_fn, images, maps, steps, (mode,), [base], chunk_size, with_index)[0]


def deletion_insertion_curves(
    score_fn: ScoreFn,
    images: Tensor,
    maps: Tensor,
    steps: int = 50,
    deletion_baseline: str | Tensor = "zero",
    insertion_baseline: str | Tensor = "blur",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    with_index: bool = False,
) -> tuple[Tensor, Tensor]:
    """Both curves in one batched pass, sharing the images they have in common.

    The clean image (deletion's first point, insertion's last) is scored once; when both use
    the same baseline, so is the fully deleted image (deletion's last, insertion's first).
    Arguments as in :func:`perturbation_curves`.

    Returns:
        ``(deletion, insertion)``, each (N, steps + 1).
    """
    maps = check_images_maps(images, maps)
    check_steps(steps)
    del_base = resolve_baseline(deletion_baseline, "deletion")
    ins_base = resolve_baseline(insertion_baseline, "insertion")
    bases = [make_baseline(images, del_base)]
    shared = del_base is ins_base or (isinstance(del_base, str) and del_base == ins_base)
    bases.append(bases[0] if shared else make_baseline(images, ins_base))
    modes = ("deletion", "insertion")
    curves = _curve_grid(score_fn, images, maps, steps, modes, bases, chunk_size, with_index)
    return curves[0], curves[1]


def curve_auc(curves: Tensor) -> Tensor:
    """Area under each curve on the fraction axis [0, 1] by the trapezoid rule, shape (N,)."""
    check_curves(curves)
    return torch.trapezoid(curves, dx=1.0 / (curves.shape[1] - 1), dim=1)


def _auc_update(curves: Tensor, steps: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Sum of AUCs, number of curves and the pointwise curve sum of one batch."""
    check_curves(curves, steps)
    curves = curves.detach().float()
    return curve_auc(curves).sum(), count_of(curves), curves.sum(0)


def deletion_auc(curves: Tensor) -> Tensor:
    """Mean deletion AUC of curves (N, steps + 1) from :func:`perturbation_curves`; lower is better."""
    total, count, _ = _auc_update(curves)
    return mean_compute(total, count)


def insertion_auc(curves: Tensor) -> Tensor:
    """Mean insertion AUC of curves (N, steps + 1); higher is better."""
    total, count, _ = _auc_update(curves)
    return mean_compute(total, count)
