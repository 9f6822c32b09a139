"""Targets: batched callables that turn a model output into the score being explained.

A classifier's target picks one logit per sample; a face-verification target is the cosine
similarity between a sample's embedding and the frozen embedding of its partner image, so
classification and verification share one code path in every explainer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor

SIMILARITY_MODES = ("similar", "dissimilar")


class Target(ABC):
    """Maps a model output (N, K) or (N, D) to one score per sample (N,)."""

    @abstractmethod
    def __call__(self, output: Tensor) -> Tensor:
        """Scores (N,) that the explanation attributes."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of samples this target covers (must equal the batch size)."""

    @abstractmethod
    def select(self, index: Tensor) -> Target:
        """The target restricted to the samples in ``index`` (for chunking and early stops)."""

    @abstractmethod
    def to(self, device: torch.device) -> Target:
        """The same target with its tensors on ``device``."""

    def check(self, batch_size: int) -> None:
        """Raise ``ValueError`` unless the target covers exactly ``batch_size`` samples."""
        if len(self) != batch_size:
            raise ValueError(
                f"{type(self).__name__} has {len(self)} entries but the batch has {batch_size} "
                "images; give exactly one target per image"
            )


class ClassTarget(Target):
    """The logit of one class per sample (raw logit, as Grad-CAM and FAME use).

    Args:
        labels: class index per sample, integer tensor (N,).
    """

    def __init__(self, labels: Tensor | list[int]) -> None:
        labels = torch.as_tensor(labels)
        if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise TypeError(
                f"ClassTarget labels must be an integer tensor of shape (N,), got dtype "
                f"{labels.dtype} and shape {tuple(labels.shape)}"
            )
        self.labels = labels.long().clone()

    def __call__(self, output: Tensor) -> Tensor:
        """The logit of each sample's class (N,); labels outside the logits are an error."""
        if output.dim() != 2:
            raise ValueError(f"ClassTarget needs logits of shape (N, K), got {tuple(output.shape)}")
        n_classes = output.shape[1]
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= n_classes):
            raise ValueError(
                f"ClassTarget labels must lie in [0, {n_classes - 1}] for a model with "
                f"{n_classes} outputs, got min {int(self.labels.min())}, max {int(self.labels.max())}"
            )
        return output.gather(1, self.labels.to(output.device)[:, None])[:, 0]

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, index: Tensor) -> ClassTarget:
        """The labels of the samples in ``index``."""
        return ClassTarget(self.labels[index.to(self.labels.device)])

    def to(self, device: torch.device) -> ClassTarget:
        """The labels on ``device``."""
        return ClassTarget(self.labels.to(device))

    def __repr__(self) -> str:
        return f"ClassTarget(n={len(self)})"


class SimilarityTarget(Target):
    """Cosine similarity of each embedding to its partner's frozen embedding.

    ``mode="similar"`` explains s = cos(phi(x), r) (what supports the match, e+);
    ``mode="dissimilar"`` explains 1 - s (what pushes the pair apart, e-), as in FAME
    (Zhang & Guenther, CVPRW 2026, arXiv 2605.12017).

    Args:
        reference: partner embeddings (N, D); detached, so no gradient flows into them.
        mode: "similar" or "dissimilar".
    """

    def __init__(self, reference: Tensor, mode: str = "similar") -> None:
        if not isinstance(reference, Tensor) or reference.dim() != 2:
            shape = tuple(reference.shape) if isinstance(reference, Tensor) else type(reference)
            raise ValueError(f"SimilarityTarget reference must be a (N, D) tensor, got {shape}")
        if mode not in SIMILARITY_MODES:
            raise ValueError(f"Unknown similarity mode {mode!r}. Available: {', '.join(SIMILARITY_MODES)}")
        if not torch.isfinite(reference).all():
            raise ValueError("SimilarityTarget reference contains NaN or Inf")
        self.reference = reference.detach().clone().float()
        self.mode = mode

    def __call__(self, output: Tensor) -> Tensor:
        """cos(output, reference) (N,), or 1 - cos in "dissimilar" mode."""
        if output.dim() != 2 or output.shape[1] != self.reference.shape[1]:
            raise ValueError(
                f"SimilarityTarget reference has dimension {self.reference.shape[1]} but the model "
                f"output has shape {tuple(output.shape)}; pass embeddings of the same model"
            )
        score = F.cosine_similarity(output, self.reference.to(output.device), dim=1)
        return score if self.mode == "similar" else 1.0 - score

    def __len__(self) -> int:
        return len(self.reference)

    def select(self, index: Tensor) -> SimilarityTarget:
        """The partner embeddings of the samples in ``index``, same mode."""
        return SimilarityTarget(self.reference[index.to(self.reference.device)], self.mode)

    def to(self, device: torch.device) -> SimilarityTarget:
        """The partner embeddings on ``device``, same mode."""
        return SimilarityTarget(self.reference.to(device), self.mode)

    def __repr__(self) -> str:
        return f"SimilarityTarget(n={len(self)}, mode={self.mode!r})"
