"""Average Drop, Increase in Confidence and Average Drop in Deletion.

Average Drop and Increase in Confidence come from Grad-CAM++ (Chattopadhay et al., WACV 2018,
arXiv 1710.11063): keep only what the map highlights, O = s(x * E), and compare with the clean
score Y = s(x). Average Drop in Deletion comes from LIFT-CAM (Jung & Oh, ICCV 2021,
arXiv 2102.05228): remove what the map highlights, D = s(x * (1 - E)). The product is taken in
the space the tensor lives in (normalised inputs), where 0 is the mean colour, the same
convention as the "zero" deletion baseline.

The ratio forms divide by Y, which only makes sense for positive scores (probabilities). Cosine
scores of face pairs can be zero or negative, so ``form="ratio"`` skips samples with Y <= 0
(they count in neither the sum nor the count), and ``form="difference"`` uses Y - O instead of
(Y - O) / Y for every sample. The form is recorded in the metrics' settings.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from facexai.metrics.functional._checks import (
    check_images_maps,
    check_same_shape,
    check_scores,
)
from facexai.metrics.functional._reduce import count_of, percent_compute
from facexai.metrics.functional.perturbation import DEFAULT_CHUNK_SIZE, score_in_chunks

FORMS = ("ratio", "difference")


def check_form(form: str) -> None:
    """Raise ``ValueError`` for an unknown Average Drop form."""
    if form not in FORMS:
        raise ValueError(f"Unknown form {form!r}. Available: {', '.join(FORMS)}")


def masked_scores(
    score_fn: Callable[..., Tensor],
    images: Tensor,
    maps: Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    with_index: bool = False,
    clean: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Clean, map-kept and map-deleted scores in one chunked pass.

    Args:
        score_fn: images (B, C, H, W) -> scores (B,); ``score_fn(images, index)`` if
            ``with_index`` (see :func:`perturbation_curves`).
        images: normalised inputs (N, C, H, W).
        maps: explanations in [0, 1], (N, H, W) or (N, 1, H, W).
        chunk_size: images per ``score_fn`` call.
        with_index: pass the sample index of each image to ``score_fn``.
        clean: the clean scores s(x) (N,) when the caller has them already (a deletion curve's
            first point is the clean image): then only the kept and deleted images are scored.

    Returns:
        ``(Y, O, D)``: s(x), s(x * E), s(x * (1 - E)), each (N,).
    """
    maps = check_images_maps(images, maps).unsqueeze(1)
    n = len(images)
    if clean is not None and clean.shape != (n,):
        raise ValueError(f"clean must have one score per image ({n},), got {tuple(clean.shape)}")
    first = 0 if clean is None else 1  # kinds scored: 0 clean, 1 keep, 2 delete
    kind = torch.arange(first, 3, device=images.device).repeat_interleave(n)
    sample = torch.arange(n, device=images.device).repeat(3 - first)

    def build(jobs: Tensor) -> Tensor:
        s, k = sample[jobs], kind[jobs].view(-1, 1, 1, 1)
        weight = torch.where(k == 1, maps[s], torch.where(k == 2, 1 - maps[s], torch.ones_like(maps[s])))
        return images[s] * weight

    scores = score_in_chunks(score_fn, build, sample, chunk_size, with_index)
    if clean is not None:
        scores = torch.cat([clean.detach().to(scores), scores])
    return scores[:n], scores[n : 2 * n], scores[2 * n :]


def _check_pair(scores: Tensor, other: Tensor, other_name: str) -> None:
    check_scores(scores, "scores")
    check_scores(other, other_name)
    check_same_shape(scores, other, ("scores", other_name))


def _relative(drop: Tensor, scores: Tensor, form: str) -> tuple[Tensor, Tensor]:
    """Per-sample values and the mask of samples that count, for the given form."""
    check_form(form)
    if form == "difference":
        return drop, torch.ones_like(scores, dtype=torch.bool)
    valid = scores > 0
    return torch.where(valid, drop / torch.where(valid, scores, 1.0), 0.0), valid


def _average_drop_update(scores: Tensor, masked: Tensor, form: str = "ratio") -> tuple[Tensor, Tensor]:
    """Sum of max(0, Y - O) [/ Y] and the number of counted samples."""
    _check_pair(scores, masked, "masked_scores")
    values, valid = _relative((scores - masked).clamp(min=0).float(), scores.float(), form)
    return values[valid].sum(), valid.sum().float()


def _increase_update(scores: Tensor, masked: Tensor) -> tuple[Tensor, Tensor]:
    """Number of samples with O > Y and the number of samples."""
    _check_pair(scores, masked, "masked_scores")
    return (masked > scores).sum().float(), count_of(scores)


def _drop_in_deletion_update(scores: Tensor, deleted: Tensor, form: str = "ratio") -> tuple[Tensor, Tensor]:
    """Sum of (Y - D) [/ Y] (not clamped: a rise counts against the map) and the count."""
    _check_pair(scores, deleted, "deleted_scores")
    values, valid = _relative((scores - deleted).float(), scores.float(), form)
    return values[valid].sum(), valid.sum().float()


def average_drop(scores: Tensor, masked_scores: Tensor, form: str = "ratio") -> Tensor:
    """Average Drop in percent, mean of max(0, Y - O) / Y x 100; lower is better.

    Args:
        scores: clean scores Y (N,).
        masked_scores: scores O of the images multiplied by their maps (N,).
        form: "ratio" (Grad-CAM++; samples with Y <= 0 skipped) or "difference" (Y - O).
    """
    return percent_compute(*_average_drop_update(scores, masked_scores, form))


def increase_in_confidence(scores: Tensor, masked_scores: Tensor) -> Tensor:
    """Increase in Confidence in percent, mean of 1[O > Y] x 100; higher is better."""
    return percent_compute(*_increase_update(scores, masked_scores))


def average_drop_in_deletion(scores: Tensor, deleted_scores: Tensor, form: str = "ratio") -> Tensor:
    """Average Drop in Deletion in percent, mean of (Y - D) / Y x 100; higher is better.

    Args:
        scores: clean scores Y (N,).
        deleted_scores: scores D of the images multiplied by (1 - map) (N,).
        form: "ratio" (LIFT-CAM; samples with Y <= 0 skipped) or "difference" (Y - D).
    """
    return percent_compute(*_drop_in_deletion_update(scores, deleted_scores, form))
