"""Verification accuracy under deletion / insertion (the CorrRISE / FAME protocol).

Dataset level: the operating threshold is the EER threshold of the *clean* pair scores; then the
top P % pixels of each probe (by its e+ map) are deleted (zeroed) -- or, for insertion, only they
are kept -- for P = 0, 10, ..., 100, all pair similarities are recomputed against the partner's
clean embedding, and the verification accuracy at the fixed threshold is measured. A faithful
e+ map makes accuracy on genuine pairs collapse quickly under deletion.
AUC = trapezoid(accuracy, P) / 100.

Pairs are interleaved, as in insightface's ``.bin`` sets: ``images[2 i]`` is the probe of pair
``i`` and ``images[2 i + 1]`` its partner.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facexai.metrics.functional._checks import check_curves, check_maps, check_mode
from facexai.metrics.functional.perturbation import (
    DEFAULT_CHUNK_SIZE,
    ScoreFn,
    deletion_insertion_curves,
    perturbation_curves,
)
from facexai.metrics.functional.scoring import similarity_score_fn
from facexai.metrics.verification import equal_error_rate


def split_pairs(images: Tensor) -> tuple[Tensor, Tensor]:
    """Probes ``images[0::2]`` and partners ``images[1::2]``; raise for an odd count."""
    if images.dim() != 4:
        raise ValueError(f"images must have shape (2 M, C, H, W), got {tuple(images.shape)}")
    if len(images) % 2:
        raise ValueError(
            f"pairs are expected as interleaved images (probe, partner, probe, ...), got an odd "
            f"number of images ({len(images)})"
        )
    return images[0::2], images[1::2]


def verification_perturbation_curves(
    embed_fn: nn.Module | Callable[[Tensor], Tensor],
    images: Tensor,
    maps: Tensor,
    steps: int = 10,
    mode: str = "deletion",
    baseline: str | Tensor = "zero",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """Pair similarity while the probe's top pixels are deleted or inserted.

    Args:
        embed_fn: maps images to embeddings (B, D).
        images: interleaved pairs (2 M, C, H, W).
        maps: e+ maps of the probes ``images[0::2]``, (M, H, W).
        steps: P = 100 k / steps percent for k = 0..steps (default 10: P = 0, 10, ..., 100).
        mode: "deletion" (zero the top P %) or "insertion" (keep only the top P %).
        baseline: what replaces removed pixels; "zero" in both modes per the protocol.
        chunk_size: images per ``embed_fn`` call.

    Returns:
        Cosine similarities (M, steps + 1) to the partners' clean embeddings. The clean score
        is column 0 for deletion and column ``steps`` for insertion.
    """
    probes, maps, score_fn = _probe_scoring(embed_fn, images, maps)
    return perturbation_curves(score_fn, probes, maps, steps, baseline, mode, chunk_size, with_index=True)


def verification_deletion_insertion_curves(
    embed_fn: nn.Module | Callable[[Tensor], Tensor],
    images: Tensor,
    maps: Tensor,
    steps: int = 10,
    deletion_baseline: str | Tensor = "zero",
    insertion_baseline: str | Tensor = "zero",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[Tensor, Tensor]:
    """Deletion and insertion pair curves in one pass: two ``verification_perturbation_curves`` with less work.

    The partners are embedded once, the clean probe (deletion's first point, insertion's last)
    is scored once, and with the same baseline (the protocol's "zero" in both modes) so is the
    fully deleted probe (deletion's last point, insertion's first): for ``steps`` = 10 that is
    M + 20 M forwarded images instead of 2 (M + 11 M). Arguments as in
    :func:`verification_perturbation_curves`.

    Returns:
        ``(deletion, insertion)`` cosine similarities, each (M, steps + 1).
    """
    probes, maps, score_fn = _probe_scoring(embed_fn, images, maps)
    return deletion_insertion_curves(
        score_fn, probes, maps, steps, deletion_baseline, insertion_baseline, chunk_size, with_index=True
    )


def _probe_scoring(
    embed_fn: nn.Module | Callable[[Tensor], Tensor], images: Tensor, maps: Tensor
) -> tuple[Tensor, Tensor, ScoreFn]:
    """Probes, their checked maps and the indexed cosine to the partners' clean embeddings (one forward)."""
    probes, partners = split_pairs(images)
    maps = check_maps(maps)
    if len(maps) != len(probes):
        raise ValueError(f"got {len(probes)} pairs but {len(maps)} maps; give one e+ map per probe")
    with torch.no_grad():
        references = embed_fn(partners)
    return probes, maps, similarity_score_fn(embed_fn, references)


def _pair_curve_update(curves: Tensor, issame: Tensor, steps: int | None = None) -> tuple[Tensor, Tensor]:
    """Validated, detached copies of one batch of pair curves and labels."""
    check_curves(curves, steps)
    if issame.shape != curves.shape[:1]:
        raise ValueError(f"issame must have one entry per pair ({len(curves)},), got {tuple(issame.shape)}")
    return curves.detach().float(), issame.detach().long()


def _pair_curve_compute(curves: Tensor, issame: Tensor, mode: str) -> tuple[Tensor, Tensor, Tensor]:
    """EER threshold of the clean scores, accuracy per step (steps + 1,), and the AUC."""
    check_mode(mode)
    clean = curves[:, 0] if mode == "deletion" else curves[:, -1]
    _, threshold = equal_error_rate(clean, issame)
    accuracy = ((curves >= threshold) == issame.bool()[:, None]).float().mean(0)
    auc = torch.trapezoid(accuracy, dx=1.0 / (curves.shape[1] - 1))
    return threshold, accuracy, auc


def verification_accuracy_curve(curves: Tensor, issame: Tensor, mode: str = "deletion") -> Tensor:
    """Verification accuracy (steps + 1,) at the clean EER threshold, per deletion/insertion step."""
    return _pair_curve_compute(*_pair_curve_update(curves, issame), mode)[1]


def verification_deletion_auc(curves: Tensor, issame: Tensor) -> Tensor:
    """Area under accuracy vs. fraction deleted (trapezoid(accuracy, P) / 100); lower is better."""
    return _pair_curve_compute(*_pair_curve_update(curves, issame), "deletion")[2]


def verification_insertion_auc(curves: Tensor, issame: Tensor) -> Tensor:
    """Area under accuracy vs. fraction inserted (trapezoid(accuracy, P) / 100); higher is better."""
    return _pair_curve_compute(*_pair_curve_update(curves, issame), "insertion")[2]


def pair_cosine(embeddings: Tensor) -> Tensor:
    """Cosine similarity of interleaved embedding pairs (2 M, D) -> (M,)."""
    if embeddings.dim() != 2 or len(embeddings) % 2:
        raise ValueError(
            f"embeddings must be interleaved pairs (2 M, D) with an even count, got {tuple(embeddings.shape)}"
        )
    return F.cosine_similarity(embeddings[0::2], embeddings[1::2], dim=1)
