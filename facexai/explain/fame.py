"""FAME: Feature Activation Map Explanation (Zhang & Guenther, CVPR Workshops 2026).

Paper: "FAME: Feature Activation Map Explanation on Image Classification and Face Recognition",
arXiv 2605.12017. FAME reinterprets the LOTS feature-space attack (Rozsa, Guenther & Boult,
"LOTS about Attacking Deep Features", arXiv 1611.06179, 2016; IJCB 2017) as an explanation: the
input is pushed down the gradient of the target score with steps normalised so that the strongest
pixel moves by exactly ``step_size``, and the accumulated change, in gray levels, blurred, is the
map.

Early stopping differs from the reference code by design: the reference stops the whole batch
once the *batch-mean* loss falls below ``epsilon``; here every sample stops on its own loss and
leaves the batch, so a sample's map never depends on its batch-mates. With ``epsilon=None`` both
run exactly ``iterations`` steps.
"""

from __future__ import annotations

import math
from typing import Final, Literal

import torch
from torch import Tensor, nn
from torchvision.transforms.functional import gaussian_blur

from facexai.explain.base import Explainer, check_positive
from facexai.explain.registry_instance import register_explainer
from facexai.explain.targets import Target

#: luma weights of torchvision's ``rgb_to_grayscale``, which the FAME reference maps go through
LUMA = (0.2989, 0.587, 0.114)
#: the paper's blur (arXiv 2605.12017): kernel 49, sigma 7.7 px on 112 px ArcFace crops
PAPER_SIDE, PAPER_KERNEL, PAPER_SIGMA = 112, 49, 7.7
AUTO: Final = "auto"


@register_explainer("fame")
class FAME(Explainer):
    """FAME (arXiv 2605.12017): the blurred gray-level change of a LOTS descent of the score.

    Model-agnostic and white-box: no target layer, one forward and one backward through the whole
    network per iteration, all samples of the batch in parallel. The loss descended is the
    target's score: the raw logit z_c for a :class:`~facexai.explain.ClassTarget`, s for a
    similar and 1 - s for a dissimilar :class:`~facexai.explain.SimilarityTarget` (maps e+ and
    e-).

    Args:
        iterations: number of LOTS steps (paper: 500). The paper reports maps stable from
            about 75-200 steps; on trained face models here they keep changing until about 400
            (Pearson to the 500-step map, median / min: 0.85-0.87 / 0.47-0.66 at 100 steps, 0.99 /
            0.97 at 400; ``benchmarks/README.md``, "FAME's iteration budget"), so fewer steps
            give a different map, not a noisier one.
        step_size: the largest per-pixel change of each step, in the units of the (normalised)
            input tensor; the paper uses 1/255. No clamping is applied.
        epsilon: per-sample early stop: a sample whose loss falls below ``epsilon`` is frozen
            and takes no further steps. Any finite number is accepted, since a classification
            loss is a raw logit that may legitimately be driven below zero. ``None`` (default)
            always runs ``iterations`` steps.
        blur_kernel: odd size of the Gaussian smoothing kernel, or ``"auto"`` (default): the
            odd kernel that keeps the paper's truncation radius of 24 px = 3.12 sigma, i.e.
            ``2 * round(sigma * 24 / 7.7) + 1``, which is the paper's 49 at sigma 7.7. 1 turns
            the blur off. On images whose shorter side ``m`` is at most ``kernel // 2``, reflect
            padding is impossible, so the kernel is truncated to ``2 * m - 1`` (sigma
            unchanged). The blur sets the maps' coarse structure: on the 64 px demo faces the
            paper's fixed blur kept a Spearman correlation of 0.52 with the maps of a fully
            re-initialised model, 0.33 unblurred (``benchmarks/README.md``, sanity).
        blur_sigma: standard deviation of the Gaussian in pixels (paper: 7.7), or ``"auto"``:
            the paper's blur scaled to the input, ``7.7 * side / 112`` with ``side`` the shorter
            image side, computed per call. FAME (arXiv 2605.12017) states 7.7 px for 112 px
            ArcFace crops; a fixed 7.7 px on a 64 px face covers 1.75x more of the face, and on
            224 px crops half as much, so ``"auto"`` keeps the blur the same *fraction* of the
            face at any resolution. At 112 px ``"auto"`` is exactly the paper's (kernel 49,
            sigma 7.7); at 64 px it is sigma 4.4 with kernel 29.

    Attributes:
        last_iterations: steps taken per sample in the most recent call, LongTensor (N,) on the
            images' device (``iterations`` everywhere unless ``epsilon`` stopped a sample early).
    """

    not_exportable = (
        "its LOTS loop (hundreds of forward and backward passes, stopping samples on their loss values) "
        "would be unrolled into the graph"
    )

    def __init__(
        self,
        iterations: int = 500,
        step_size: float = 1.0 / 255.0,
        epsilon: float | None = None,
        blur_kernel: int | Literal["auto"] = AUTO,
        blur_sigma: float | Literal["auto"] = PAPER_SIGMA,
    ) -> None:
        check_positive("iterations", iterations, integer=True)
        check_positive("step_size", step_size)
        check_epsilon(epsilon)
        if blur_kernel != AUTO:
            check_kernel(blur_kernel)
        if blur_sigma != AUTO:
            check_sigma(blur_sigma)
        self.iterations = iterations
        self.step_size = float(step_size)
        self.epsilon = None if epsilon is None else float(epsilon)
        self.blur_kernel: int | str = blur_kernel
        self.blur_sigma: float | str = blur_sigma if blur_sigma == AUTO else float(blur_sigma)
        self._last_iterations: Tensor | None = None

    @property
    def last_iterations(self) -> Tensor | None:
        """Steps taken per sample in the most recent call (``None`` before the first call)."""
        return self._last_iterations

    def explain(self, model: nn.Module, images: Tensor, target: Target) -> Tensor:
        """The blurred gray-level change (N, H, W) of a LOTS descent of the target's score."""
        adversarial, steps = fame_perturb(model, images, target, self.iterations, self.step_size, self.epsilon)
        self._last_iterations = steps
        return fame_map(images, adversarial, *self.blur_parameters(images.shape[-2:]))

    def blur_parameters(self, size: tuple[int, int] | torch.Size) -> tuple[int, float]:
        """(kernel, sigma) used for images of ``size`` (H, W), with every ``"auto"`` resolved.

        The kernel is the requested one; :func:`fame_map` may still truncate it on images too
        small for its reflect padding (:func:`effective_kernel`).
        """
        sigma = scaled_sigma(size) if self.blur_sigma == AUTO else float(self.blur_sigma)
        kernel = matching_kernel(sigma) if self.blur_kernel == AUTO else int(self.blur_kernel)
        return kernel, sigma


def scaled_sigma(size: tuple[int, int] | torch.Size) -> float:
    """The paper's sigma (7.7 px at 112 px) scaled to the shorter side of ``size`` (H, W)."""
    return PAPER_SIGMA * min(size) / PAPER_SIDE


def matching_kernel(sigma: float) -> int:
    """The odd kernel (>= 1) with the paper's radius-to-sigma ratio (24 / 7.7): 49 at 7.7."""
    return 2 * round(sigma * (PAPER_KERNEL // 2) / PAPER_SIGMA) + 1


def fame_perturb(
    model: nn.Module,
    images: Tensor,
    target: Target,
    iterations: int,
    step_size: float,
    epsilon: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Run the LOTS descent of FAME (Eq. 3 of arXiv 2605.12017) and return the perturbed batch.

    Each step is x <- x - step_size * g / max|g| with g = dL/dx, the max taken per sample over
    (C, H, W); a sample with an all-zero gradient stays where it is. The caller sets the model's
    mode (the Explainer runs it in eval) and grad mode.

    Args:
        model: maps (N, 3, H, W) to the output ``target`` scores.
        images: the starting batch (N, 3, H, W); not modified.
        target: one entry per image; its scores are the per-sample losses L.
        iterations: maximum number of steps.
        step_size: the largest per-pixel change of one step.
        epsilon: per-sample early-stop threshold on L, or ``None`` to always take every step.

    Returns:
        (x_adv (N, 3, H, W) detached, steps taken per sample LongTensor (N,)).
    """
    if epsilon is None:
        adversarial = images.detach().clone()
        for _ in range(iterations):
            adversarial = lots_step(model, adversarial, target, step_size)[0]
        return adversarial, torch.full((len(images),), iterations, device=images.device)
    return _perturb_until(model, images, target, iterations, step_size, epsilon)


def lots_step(model: nn.Module, images: Tensor, target: Target, step_size: float) -> tuple[Tensor, Tensor]:
    """One normalised-gradient step; returns (stepped batch, loss before the step)."""
    inputs = images.detach().requires_grad_(True)
    loss = target(model(inputs))
    (gradient,) = torch.autograd.grad(loss.sum(), inputs)
    return normalised_step(images.detach(), gradient, step_size), loss.detach()


def normalised_step(images: Tensor, gradient: Tensor, step_size: float) -> Tensor:
    """X - step_size * g / max|g| per sample; samples with max|g| = 0 do not move.

    ``g / max|g|`` is exactly +-1 at the strongest pixel, so that pixel moves by exactly
    ``step_size`` (up to the rounding of the final subtraction).
    """
    peak = torch.linalg.vector_norm(gradient.flatten(1), ord=math.inf, dim=1)
    peak = torch.where(peak > 0, peak, torch.ones_like(peak)).view(-1, 1, 1, 1)
    return torch.addcdiv(images, gradient, peak, value=-step_size)


def _perturb_until(
    model: nn.Module,
    images: Tensor,
    target: Target,
    iterations: int,
    step_size: float,
    epsilon: float,
) -> tuple[Tensor, Tensor]:
    """The descent with per-sample early stopping: finished samples leave the batch.

    A sample is checked *before* each step (as in the reference): once its loss is below
    ``epsilon`` it is written back, frozen, and removed from the forward/backward batch. This
    costs one host synchronisation per iteration (reading which samples finished).
    """
    result = images.detach().clone()
    steps = torch.full((len(images),), iterations, device=images.device)
    active = torch.arange(len(images), device=images.device)
    current = result.clone()
    for step in range(iterations):
        inputs = current.requires_grad_(True)
        loss = target(model(inputs))
        running = ~(loss.detach() < epsilon)  # a NaN loss keeps running, as in the reference
        keep = None
        if not bool(running.all()):
            finished, keep = active[~running], running.nonzero()[:, 0]
            result[finished] = current.detach()[~running]
            steps[finished] = step
            if len(keep) == 0:
                return result, steps
            active, target, loss = active[keep], target.select(keep), loss[keep]
        (gradient,) = torch.autograd.grad(loss.sum(), inputs)
        current = inputs.detach()
        if keep is not None:  # finished rows got zero gradient; drop them with their images
            current, gradient = current[keep], gradient[keep]
        current = normalised_step(current, gradient, step_size)
    result[active] = current
    return result, steps


def fame_map(images: Tensor, adversarial: Tensor, blur_kernel: int = 49, blur_sigma: float = 7.7) -> Tensor:
    """The FAME map (Eq. 4 of arXiv 2605.12017) before ReLU and min-max.

    d = |gray(x_adv) - gray(x)| with torchvision's luma weights (gray before the absolute value:
    computed as gray(x_adv - x), the same linear map without cancellation), divided by its
    per-map maximum (all-zero maps stay zero), then a Gaussian blur with reflect padding
    (``torchvision.transforms.functional.gaussian_blur``).

    Returns:
        Raw maps (N, H, W), float32, non-negative.
    """
    weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device)
    difference = torch.einsum("nchw,c->nhw", adversarial - images, weights).abs()
    peak = difference.flatten(1).amax(dim=1).view(-1, 1, 1)
    difference = difference / torch.where(peak > 0, peak, torch.ones_like(peak))
    kernel = effective_kernel(blur_kernel, difference.shape[-2:])
    return gaussian_blur(difference[:, None], [kernel, kernel], [blur_sigma, blur_sigma])[:, 0]


def effective_kernel(kernel: int, size: tuple[int, int] | torch.Size) -> int:
    """``kernel``, truncated to the largest odd size whose reflect padding fits the image.

    Reflect padding by ``kernel // 2`` needs ``kernel // 2 < min(H, W)``; 2 * min(H, W) - 1 is
    the largest odd kernel that satisfies it. Images at least ``kernel // 2 + 1`` pixels on each
    side (25 for the default 49) are blurred exactly as the reference does.
    """
    return min(kernel, 2 * min(size) - 1)


def check_epsilon(epsilon: object) -> None:
    """Raise unless ``epsilon`` is ``None`` or a finite real number."""
    if epsilon is None:
        return
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
        raise TypeError(f"epsilon must be None or a number, got {epsilon!r}")
    if not math.isfinite(epsilon):
        raise ValueError(f"epsilon must be None or a finite number, got {epsilon!r}")


def check_sigma(blur_sigma: object) -> None:
    """Raise unless ``blur_sigma`` is a positive number (``"auto"`` is checked by the caller)."""
    if isinstance(blur_sigma, str):  # a misspelled "auto" is a wrong value of an accepted type
        raise ValueError(f"blur_sigma must be a positive number or 'auto', got {blur_sigma!r}")  # noqa: TRY004
    check_positive("blur_sigma", blur_sigma)


def check_kernel(blur_kernel: object) -> None:
    """Raise unless ``blur_kernel`` is an odd positive integer (``"auto"`` is checked by the caller)."""
    if isinstance(blur_kernel, str):  # a misspelled "auto" is a wrong value of an accepted type
        raise ValueError(f"blur_kernel must be an odd positive integer or 'auto', got {blur_kernel!r}")  # noqa: TRY004
    check_positive("blur_kernel", blur_kernel, integer=True)
    if isinstance(blur_kernel, int) and blur_kernel % 2 == 0:  # an int once check_positive passed
        raise ValueError(
            f"blur_kernel must be odd (the Gaussian is centred on a pixel), got {blur_kernel!r}; "
            f"use {blur_kernel + 1} or {blur_kernel - 1}"
        )
