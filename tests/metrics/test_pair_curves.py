"""Verification accuracy under deletion / insertion (CorrRISE / FAME protocol)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facexai.metrics import VerificationDeletionAUC, VerificationInsertionAUC
from facexai.metrics.functional import (
    pair_cosine,
    verification_accuracy_curve,
    verification_deletion_auc,
    verification_insertion_auc,
    verification_perturbation_curves,
)

# Four pairs, 3 points each (steps = 2: P = 0, 50, 100 %), deletion order.
CURVES = torch.tensor([[0.9, 0.5, 0.1], [0.8, 0.7, 0.2], [0.3, 0.4, 0.1], [0.2, 0.1, 0.0]])
ISSAME = torch.tensor([1, 1, 0, 0])


def test_accuracy_curve_hand_computed() -> None:
    # Clean scores .9 .8 (genuine) .3 .2 (impostors) are separable: EER 0 at the vertex with
    # threshold .8, midpoint to the next score .3 -> threshold .55.
    # P = 0: all correct (1.0); P = 50: pair 0 drops to .5 < .55 -> 3/4; P = 100: all rejected
    # -> the two impostors right -> 1/2. AUC = .5 * (1 + .75) / 2 + .5 * (.75 + .5) / 2 = .75.
    torch.testing.assert_close(verification_accuracy_curve(CURVES, ISSAME), torch.tensor([1.0, 0.75, 0.5]))
    assert verification_deletion_auc(CURVES, ISSAME).item() == pytest.approx(0.75)
    flipped = CURVES.flip(1)  # insertion: the clean score is the last column
    torch.testing.assert_close(
        verification_accuracy_curve(flipped, ISSAME, "insertion"), torch.tensor([0.5, 0.75, 1.0])
    )
    assert verification_insertion_auc(flipped, ISSAME).item() == pytest.approx(0.75)


@pytest.mark.parametrize("cls", [VerificationDeletionAUC, VerificationInsertionAUC])
def test_classes_match_functions_across_batches(cls) -> None:
    gen = torch.Generator().manual_seed(0)
    issame = (torch.rand(40, generator=gen) < 0.5).long()
    curves = torch.rand(40, 11, generator=gen) * 0.5 + 0.4 * issame[:, None]
    fn = verification_deletion_auc if cls is VerificationDeletionAUC else verification_insertion_auc
    metric = cls()
    for part_c, part_y in zip(curves.split(15), issame.split(15), strict=True):
        metric.update(part_c, part_y)
    assert metric.compute().item() == pytest.approx(fn(curves, issame).item())
    mode = "deletion" if cls is VerificationDeletionAUC else "insertion"
    torch.testing.assert_close(metric.accuracy_curve(), verification_accuracy_curve(curves, issame, mode))
    assert metric.settings == {"steps": 10, "baseline": "zero"}
    metric.reset()
    metric.update(curves[:20], issame[:20])
    assert metric.compute().item() == pytest.approx(fn(curves[:20], issame[:20]).item())
    with pytest.raises(ValueError, match="expects curves of 11 points"):
        metric.update(torch.rand(2, 5), torch.tensor([0, 1]))


def test_perturbation_curves_closed_form_for_a_linear_embedding() -> None:
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(6, 3, 8, 8, generator=gen)  # 3 interleaved pairs
    maps = torch.rand(3, 8, 8, generator=gen)
    proj = torch.randn(3 * 64, 5, generator=gen)

    def embed(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ proj

    for mode in ("deletion", "insertion"):
        curves = verification_perturbation_curves(embed, images, maps, steps=4, mode=mode, chunk_size=3)
        x, m, p = images.double().numpy(), maps.double().numpy(), proj.double().numpy()
        for i in range(3):
            order = np.argsort(-m[i].ravel(), kind="stable")
            ref = x[2 * i + 1].reshape(1, -1) @ p
            for k in range(5):
                kept = np.zeros(64, dtype=bool)
                kept[order[: k * 64 // 4]] = True
                if mode == "deletion":
                    kept = ~kept
                probe = x[2 * i] * kept.reshape(1, 8, 8)
                e = probe.reshape(1, -1) @ p
                cos = (e * ref).sum() / (np.linalg.norm(e) * np.linalg.norm(ref) + 1e-12)
                assert curves[i, k].item() == pytest.approx(cos, abs=1e-5), (mode, i, k)
    clean = pair_cosine(embed(images))
    torch.testing.assert_close(verification_perturbation_curves(embed, images, maps, 4)[:, 0], clean)


def test_bad_inputs_raise() -> None:
    def embed(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    with pytest.raises(ValueError, match="odd number of images"):
        verification_perturbation_curves(embed, torch.rand(5, 3, 8, 8), torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match="3 pairs but 2 maps"):
        verification_perturbation_curves(embed, torch.rand(6, 3, 8, 8), torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match=r"odd|even"):
        pair_cosine(torch.rand(3, 4))
    with pytest.raises(ValueError, match="one entry per pair"):
        verification_deletion_auc(CURVES, ISSAME[:3])
