"""Explaining face pairs: each side against the frozen embedding of the other."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from facexai.explain.base import Explainer, check_images, eval_mode, float32_interface
from facexai.explain.targets import SimilarityTarget


def pair_targets(
    model: nn.Module, images_a: Tensor, images_b: Tensor, mode: str = "similar"
) -> tuple[Tensor, SimilarityTarget]:
    """Stack a pair batch as [A; B] with the target "A against B's embedding, B against A's".

    Embeddings are computed once, in eval mode and without gradient, so the partner is frozen as
    docs/methods.md describes ("Face pairs"); every module's own training flag is restored
    afterwards.
    """
    check_images(images_a)
    check_images(images_b)
    if images_a.shape != images_b.shape:
        raise ValueError(
            f"pair batches must have equal shapes, got {tuple(images_a.shape)} and {tuple(images_b.shape)}"
        )
    with eval_mode(model), float32_interface(model), torch.no_grad():
        emb = model(torch.cat([images_a, images_b]).float())
    n = len(images_a)
    reference = torch.cat([emb[n:], emb[:n]])
    return torch.cat([images_a, images_b]), SimilarityTarget(reference, mode=mode)


def explain_pairs(
    explainer: Explainer,
    model: nn.Module,
    images_a: Tensor,
    images_b: Tensor,
    mode: str = "similar",
) -> tuple[Tensor, Tensor]:
    """Maps for both sides of a batch of pairs in one batched call.

    Returns:
        (maps_a, maps_b), each (N, H, W): A explained against B's embedding and vice versa;
        ``mode="dissimilar"`` gives the e- maps (what pushes the pair apart).
    """
    images, target = pair_targets(model, images_a, images_b, mode)
    maps = explainer(model, images, target)
    n = len(images_a)
    return maps[:n], maps[n:]
