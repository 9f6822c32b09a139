"""Average Drop, Increase in Confidence, Average Drop in Deletion: closed forms and numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facexai.metrics import AverageDrop, AverageDropInDeletion, IncreaseInConfidence
from facexai.metrics.functional import (
    average_drop,
    average_drop_in_deletion,
    increase_in_confidence,
    masked_scores,
)


def test_masked_scores_closed_form_for_a_linear_model() -> None:
    gen = torch.Generator().manual_seed(0)
    images, maps = torch.randn(5, 3, 8, 8, generator=gen), torch.rand(5, 8, 8, generator=gen)
    weights = torch.randn(3, 8, 8, generator=gen)
    calls: list[int] = []

    def score(batch: torch.Tensor) -> torch.Tensor:
        calls.append(len(batch))
        return (batch * weights).sum(dim=(1, 2, 3))

    y, o, d = masked_scores(score, images, maps, chunk_size=4)
    x, m, w = images.double().numpy(), maps.double().numpy()[:, None], weights.double().numpy()
    np.testing.assert_allclose(y.numpy(), (x * w).sum((1, 2, 3)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(o.numpy(), (x * m * w).sum((1, 2, 3)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d.numpy(), (x * (1 - m) * w).sum((1, 2, 3)), rtol=1e-5, atol=1e-5)
    assert sum(calls) == 15
    assert max(calls) == 4


def test_masked_scores_with_index() -> None:
    images, maps = torch.ones(3, 1, 4, 4), torch.full((3, 4, 4), 0.25)
    bias = torch.tensor([0.0, 100.0, 200.0])
    y, o, d = masked_scores(lambda b, i: b.sum(dim=(1, 2, 3)) + bias[i], images, maps, 2, with_index=True)
    torch.testing.assert_close(y, 16 + bias)
    torch.testing.assert_close(o, 4 + bias)
    torch.testing.assert_close(d, 12 + bias)


def test_hand_computed_values() -> None:
    y = torch.tensor([0.8, 0.5, 0.4, -0.2])
    o = torch.tensor([0.4, 0.6, 0.1, -0.5])
    # ratio form skips Y <= 0: drops max(0, Y - O) / Y = .5, 0, .75 -> mean 1.25 / 3 -> 41.67 %
    assert average_drop(y, o).item() == pytest.approx(125 / 3)
    # difference form: .4, 0, .3, .3 -> 25 %
    assert average_drop(y, o, form="difference").item() == pytest.approx(25.0)
    # O > Y only for the second sample
    assert increase_in_confidence(y, o).item() == pytest.approx(25.0)
    d = torch.tensor([0.2, 0.6, 0.0, 0.0])
    # (Y - D) / Y: .75, -.2, 1 over Y > 0 -> 1.55 / 3 (not clamped: a rise counts against it)
    assert average_drop_in_deletion(y, d).item() == pytest.approx(155 / 3)
    assert average_drop_in_deletion(y, d, form="difference").item() == pytest.approx(100 * (0.6 - 0.1 + 0.4 - 0.2) / 4)


@pytest.mark.parametrize("form", ["ratio", "difference"])
def test_classes_functions_and_numpy_agree(form: str) -> None:
    gen = torch.Generator().manual_seed(1)
    y, o, d = torch.rand(3, 40, generator=gen) * 2 - 0.3
    yn, on, dn = y.double().numpy(), o.double().numpy(), d.double().numpy()
    keep = yn > 0 if form == "ratio" else np.ones_like(yn, dtype=bool)
    scale = yn if form == "ratio" else np.ones_like(yn)
    expected_ad = 100 * np.mean(np.maximum(0, yn - on)[keep] / scale[keep])
    expected_add = 100 * np.mean((yn - dn)[keep] / scale[keep])
    expected_ic = 100 * np.mean(on > yn)
    ad, add, ic = AverageDrop(form=form), AverageDropInDeletion(form=form), IncreaseInConfidence()
    for a, b, c in zip(y.split(13), o.split(13), d.split(13), strict=True):
        ad.update(a, b)
        add.update(a, c)
        ic.update(a, b)
    assert ad.compute().item() == pytest.approx(expected_ad, rel=1e-5)
    assert average_drop(y, o, form).item() == pytest.approx(expected_ad, rel=1e-5)
    assert add.compute().item() == pytest.approx(expected_add, rel=1e-5)
    assert average_drop_in_deletion(y, d, form).item() == pytest.approx(expected_add, rel=1e-5)
    assert ic.compute().item() == pytest.approx(expected_ic, rel=1e-5)
    assert increase_in_confidence(y, o).item() == pytest.approx(expected_ic, rel=1e-5)
    ad.reset()
    ad.update(y[:3], o[:3])
    assert ad.compute().item() == pytest.approx(average_drop(y[:3], o[:3], form).item())
    assert ad.settings == {"score": "probability", "form": form}


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="same shape"):
        average_drop(torch.rand(3), torch.rand(4))
    with pytest.raises(ValueError, match="NaN"):
        increase_in_confidence(torch.tensor([float("nan")]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="Available: ratio, difference"):
        AverageDrop(form="log")
    with pytest.raises(ValueError, match="2 images but 3 maps"):
        masked_scores(lambda b: b.sum(dim=(1, 2, 3)), torch.rand(2, 3, 4, 4), torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        masked_scores(lambda b: b.sum(dim=(1, 2, 3)), torch.rand(1, 3, 4, 4), torch.full((1, 4, 4), float("nan")))
