"""Margin heads that turn embeddings into identity logits for training face recognition.

ArcFace (Deng et al., CVPR 2019, arXiv 1801.07698) adds an angular margin m to the angle between
an embedding and its class centre, s * cos(theta_y + m); CosFace (Wang et al., CVPR 2018,
arXiv 1801.09414) subtracts a cosine margin, s * (cos(theta_y) - m). Both normalise embeddings
and class centres, so the logits of other classes are s * cos(theta_j).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _MarginHead(nn.Module):
    """Normalised class centres W (K, D) and a margin applied to the target-class cosine."""

    def __init__(self, embedding_size: int, num_classes: int, scale: float, margin: float) -> None:
        super().__init__()
        if embedding_size < 1 or num_classes < 2:
            raise ValueError(
                f"margin head needs embedding_size >= 1 and num_classes >= 2, got {embedding_size} and {num_classes}"
            )
        if scale <= 0 or margin < 0:
            raise ValueError(f"margin head needs scale > 0 and margin >= 0, got {scale} and {margin}")
        self.scale = scale
        self.margin = margin
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)

    def cosine(self, embeddings: Tensor) -> Tensor:
        """cos(theta) between every embedding and every class centre, (N, K)."""
        return F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1))

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Scaled logits (N, K) with the margin applied to each sample's own class."""
        cos = self.cosine(embeddings).clamp(-1.0, 1.0)
        target = cos.gather(1, labels[:, None])
        cos = cos.scatter(1, labels[:, None], self.target_logit(target))
        return self.scale * cos

    def target_logit(self, cos: Tensor) -> Tensor:
        raise NotImplementedError


class ArcFaceHead(_MarginHead):
    """ArcFace: target logit s * cos(theta + m).

    Where theta + m would pass pi, cos(theta + m) stops decreasing in theta; there the head
    falls back to cos(theta) - m * sin(m) (the linear continuation used by the ArcFace authors),
    keeping the target logit monotone in theta.
    """

    def __init__(self, embedding_size: int, num_classes: int, scale: float = 64.0, margin: float = 0.5) -> None:
        super().__init__(embedding_size, num_classes, scale, margin)

    def target_logit(self, cos: Tensor) -> Tensor:
        """cos(theta + m), continued linearly past theta = pi - m."""
        m = self.margin
        sin = torch.sqrt((1.0 - cos * cos).clamp_min(0.0))
        with_margin = cos * math.cos(m) - sin * math.sin(m)
        return torch.where(cos > math.cos(math.pi - m), with_margin, cos - m * math.sin(m))


class CosFaceHead(_MarginHead):
    """CosFace: target logit s * (cos(theta) - m)."""

    def __init__(self, embedding_size: int, num_classes: int, scale: float = 64.0, margin: float = 0.35) -> None:
        super().__init__(embedding_size, num_classes, scale, margin)

    def target_logit(self, cos: Tensor) -> Tensor:
        """cos(theta) - m."""
        return cos - self.margin


MARGIN_HEADS: dict[str, type[_MarginHead]] = {"arcface": ArcFaceHead, "cosface": CosFaceHead}
