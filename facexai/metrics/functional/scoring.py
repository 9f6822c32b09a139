"""Score functions for the model-dependent metric steps.

The perturbation functions score images in chunks that mix samples, so a score that depends on
the sample (its class label, its partner's embedding) needs the sample index of every image.
These helpers turn a model and a per-sample target into such an indexed ``score_fn``; pass
``with_index=True`` together with them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch.nn.functional as F
from torch import Tensor, nn


class SelectableTarget(Protocol):
    """What the metrics need of a target (``facexai.explain`` targets satisfy it)."""

    def __call__(self, output: Tensor) -> Tensor:
        """One score per sample (N,) from the model's outputs (N, ...)."""
        ...

    def select(self, index: Tensor) -> SelectableTarget:
        """The target of the samples ``index`` (chunks of perturbed images mix samples)."""
        ...


def target_score_fn(
    model: nn.Module | Callable[[Tensor], Tensor], target: SelectableTarget, softmax: bool = False
) -> Callable[[Tensor, Tensor], Tensor]:
    """Indexed score ``(images, index) -> target.select(index)(model(images))``.

    Args:
        model: maps images to logits (N, K) or embeddings (N, D).
        target: e.g. ``ClassTarget(labels)`` or ``SimilarityTarget(reference)``.
        softmax: score the softmax probability instead of the raw output (``docs/metrics.md``'s default
            score for classifiers; record it in the metric's ``score`` setting).
    """

    def score(images: Tensor, index: Tensor) -> Tensor:
        output = model(images)
        if softmax:
            output = output.softmax(dim=1)
        return target.select(index)(output)

    return score


def similarity_score_fn(
    embed_fn: nn.Module | Callable[[Tensor], Tensor], references: Tensor
) -> Callable[[Tensor, Tensor], Tensor]:
    """Indexed score ``cos(embed_fn(images), references[index])`` with frozen references (N, D)."""
    references = F.normalize(references.detach(), dim=1)

    def score(images: Tensor, index: Tensor) -> Tensor:
        embeddings = F.normalize(embed_fn(images), dim=1)
        return (embeddings * references[index.to(references.device)].to(embeddings)).sum(1)

    return score
