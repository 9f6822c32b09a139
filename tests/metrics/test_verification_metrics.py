"""Verification quality: hand-computed cases, an independent numpy reference, the Metric class."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facexai.metrics import VERIFICATION_KEYS, PairVerificationMetrics, verification_metrics
from facexai.metrics.verification import equal_error_rate

# Eight pairs, scores descending; labels 1 = genuine.
SCORES = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
ISSAME = torch.tensor([1, 1, 0, 1, 0, 1, 0, 0])


def test_hand_computed_eight_pairs() -> None:
    out = verification_metrics(SCORES, ISSAME, n_folds=4)
    assert tuple(out) == VERIFICATION_KEYS
    # AUC = share of (genuine, impostor) pairs ordered correctly: genuine .9 and .8 beat all 4
    # impostors, .6 beats .5/.3/.2 (3), .4 beats .3/.2 (2) -> 13 / 16.
    assert out["roc_auc"].item() == pytest.approx(13 / 16)
    # ROC vertices (fpr, tpr) from the top: (0,0) (0,.25) (0,.5) (.25,.5) (.25,.75) ...; at
    # threshold .6 FPR = 1/4 and FNR = 1 - 3/4 = 1/4 exactly -> EER .25; every threshold in
    # (.5, .6] reaches that vertex, the midpoint .55 is returned.
    assert out["eer"].item() == pytest.approx(0.25)
    assert out["eer_threshold"].item() == pytest.approx(0.55)
    # Only 4 impostors: FPR <= 1e-3 means FPR = 0, best TPR there is 2/4.
    assert out["tar@far=1e-3"].item() == pytest.approx(0.5)
    assert out["tar@far=1e-4"].item() == pytest.approx(0.5)
    # 4 contiguous folds of 2. Best training cut (lowest among ties) per held-out fold:
    #   fold {.9+, .8+}: train best 4/6 at cut .35 -> both accepted, both genuine -> 1.0
    #   fold {.7-, .6+}: train best 5/6 at cut .35 -> both accepted -> 0.5
    #   fold {.5-, .4+}: train best 5/6 at cut .45 -> .5 accepted, .4 rejected -> 0.0
    #   fold {.3-, .2-}: train best 4/6 at -inf (accept all) -> 0.0
    # mean .375; population std sqrt((.625^2 + .125^2 + 2 * .375^2) / 4) = sqrt(.171875).
    assert out["accuracy"].item() == pytest.approx(0.375)
    assert out["accuracy_std"].item() == pytest.approx(0.171875**0.5)


def test_eer_interpolates_inside_a_segment() -> None:
    # 2 genuine, 3 impostors. Vertices: (0,0) (0,.5)@.9 (1/3,.5)@.8 (1/3,1)@.7 ...
    # FNR - FPR is 1/6 at .8 and -1/3 at .7: crossing at t = (1/6) / (1/2) = 1/3 of the way,
    # where FPR = 1/3 = FNR; threshold .8 + (.7 - .8) / 3.
    eer, threshold = equal_error_rate(torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5]), torch.tensor([1, 0, 1, 0, 0]))
    assert eer.item() == pytest.approx(1 / 3)
    assert threshold.item() == pytest.approx(0.8 - 0.1 / 3)


def _numpy_reference(scores: np.ndarray, issame: np.ndarray, n_folds: int) -> dict[str, float]:
    """Brute force: pairwise AUC, EER scan, fold accuracy over every cut."""
    pos, neg = scores[issame == 1], scores[issame == 0]
    auc = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    cuts = np.concatenate([[-np.inf], np.sort(np.unique(scores)), [np.inf]])
    tpr = np.array([(pos >= c).mean() for c in cuts])
    fpr = np.array([(neg >= c).mean() for c in cuts])
    tar3 = tpr[fpr <= 1e-3].max()
    folds = np.array_split(np.arange(len(scores)), n_folds)
    accs = []
    for fold in folds:
        train = np.setdiff1d(np.arange(len(scores)), fold)
        u = np.unique(scores[train])
        candidates = np.concatenate([[-np.inf], (u[:-1] + u[1:]) / 2, [np.inf]])
        train_acc = [((scores[train] >= c) == issame[train]).mean() for c in candidates]
        best = candidates[int(np.argmax(train_acc))]
        accs.append(((scores[fold] >= best) == issame[fold]).mean())
    return {"roc_auc": auc, "tar@far=1e-3": tar3, "accuracy": np.mean(accs), "accuracy_std": np.std(accs)}


def test_matches_numpy_reference_on_random_pairs() -> None:
    gen = torch.Generator().manual_seed(0)
    issame = (torch.rand(300, generator=gen) < 0.5).long()
    scores = (torch.randn(300, generator=gen) * 0.3 + 0.4 * issame).clamp(-1, 1)
    scores = (scores * 50).round() / 50  # ties on purpose
    out = verification_metrics(scores, issame)
    ref = _numpy_reference(scores.double().numpy(), issame.numpy(), 10)
    for key, value in ref.items():
        assert out[key].item() == pytest.approx(value, abs=1e-5), key
    # EER: at the returned threshold FPR and FNR straddle the EER.
    eer = out["eer"].item()
    assert 0.05 < eer < 0.5


def test_tar_at_far_with_enough_impostors() -> None:
    gen = torch.Generator().manual_seed(1)
    neg = torch.randn(5000, generator=gen)
    pos = torch.randn(500, generator=gen) + 2.0
    scores, issame = torch.cat([pos, neg]), torch.cat([torch.ones(500), torch.zeros(5000)]).long()
    out = verification_metrics(scores, issame)
    # FAR 1e-3 of 5000 impostors: at most 5 accepted, so every genuine score above the
    # 6th-largest impostor can be accepted.
    sixth = neg.sort(descending=True).values[5]
    assert out["tar@far=1e-3"].item() == pytest.approx((pos > sixth).float().mean().item())
    assert out["tar@far=1e-4"].item() == pytest.approx((pos > neg.max()).float().mean().item())


def test_metric_class_matches_function_over_batches_and_reset() -> None:
    gen = torch.Generator().manual_seed(2)
    issame = torch.rand(120, generator=gen) < 0.5
    scores = torch.randn(120, generator=gen) + issame.float()
    metric = PairVerificationMetrics(n_folds=10)
    for part_s, part_y in zip(scores.split(35), issame.split(35), strict=True):
        metric.update(part_s, part_y)
    expected = verification_metrics(scores, issame)
    got = metric.compute()
    assert set(got) == set(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key])
    metric.reset()
    metric.update(scores[:60], issame[:60])
    torch.testing.assert_close(metric.compute()["roc_auc"], verification_metrics(scores[:60], issame[:60])["roc_auc"])


def test_metric_class_returns_nan_when_undefined() -> None:
    metric = PairVerificationMetrics()
    metric.update(torch.tensor([0.1, 0.5, 0.3]), torch.tensor([True, True, True]))
    with pytest.warns(UserWarning, match="undefined"):
        out = metric.compute()
    assert all(torch.isnan(v) for v in out.values())


@pytest.mark.parametrize(
    ("scores", "issame", "n_folds", "match"),
    [
        (SCORES, ISSAME[:5], 2, "shapes"),
        (torch.tensor([0.1, float("nan")]), torch.tensor([0, 1]), 2, "NaN"),
        (SCORES, torch.ones(8, dtype=torch.long), 2, "genuine and impostor"),
        (SCORES, ISSAME, 9, "n_folds"),
        (SCORES, ISSAME, 1, "n_folds"),
    ],
)
def test_bad_inputs_raise(scores: torch.Tensor, issame: torch.Tensor, n_folds: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        verification_metrics(scores, issame, n_folds=n_folds)


def test_eer_exact_at_a_vertex_with_thirds() -> None:
    # 3 genuine (.9 .8 .6), 3 impostors (.7 .5 .4). At threshold .7: FPR = 1/3 and
    # FNR = 1/3 exactly (thirds are inexact in floats; counts decide). Every threshold in
    # (.6, .7] reaches that vertex -> midpoint .65.
    eer, threshold = equal_error_rate(torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4]), torch.tensor([1, 1, 0, 1, 0, 0]))
    assert eer.item() == pytest.approx(1 / 3)
    assert threshold.item() == pytest.approx(0.65)


def test_labels_must_be_binary() -> None:
    with pytest.raises(ValueError, match="0/1"):
        verification_metrics(SCORES, ISSAME * 2, n_folds=2)


def test_metric_class_with_fewer_pairs_than_folds_keeps_roc_numbers():
    # 6 pairs, 10 folds: the k-fold accuracy is undefined, ROC AUC and EER are not.
    import warnings

    metric = PairVerificationMetrics(n_folds=10)
    metric.update(torch.tensor([0.9, 0.8, 0.3, 0.7, 0.2, 0.1]), torch.tensor([1, 1, 0, 1, 0, 0]).bool())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = metric.compute()
    assert values["roc_auc"].item() == 1.0  # every genuine score above every impostor score
    assert values["eer"].item() == 0.0
    assert torch.isnan(values["accuracy"])


# ----------------------------------------------------------------------------- issue 14


def test_metric_class_returns_nan_and_warns_for_non_finite_scores() -> None:
    # A diverged model (NaN embeddings) must not stop training at the validation epoch end:
    # every key depends on every score (ROC, thresholds, folds), so every key is NaN.
    scores = SCORES.clone()
    scores[2], scores[5] = float("nan"), float("inf")
    metric = PairVerificationMetrics(n_folds=4)
    metric.update(scores, ISSAME)
    with pytest.warns(UserWarning, match="2 of 8 pair scores are NaN or Inf"):
        out = metric.compute()
    assert tuple(out) == VERIFICATION_KEYS
    assert all(torch.isnan(v) for v in out.values())
    # the function twin keeps raising: a caller passing NaN by hand wants to know
    with pytest.raises(ValueError, match="NaN"):
        verification_metrics(scores, ISSAME, n_folds=4)


def _sharded_like_distributed_sampler(n: int, world: int) -> list[torch.Tensor]:
    """Pair indices per rank as DistributedSampler(shuffle=False) gives them, padding included."""
    from torch.utils.data import DistributedSampler

    return [
        torch.tensor(list(DistributedSampler(range(n), num_replicas=world, rank=r, shuffle=False)))
        for r in range(world)
    ]


def _fold_sensitive_pairs(n: int = 41) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    issame = (torch.rand(n, generator=gen) < 0.5).long()
    return torch.randn(n, generator=gen) + 0.8 * issame, issame


def test_index_restores_pair_order_and_drops_sampler_padding() -> None:
    # 41 pairs on 3 "ranks": DistributedSampler interleaves (rank r gets r, r + 3, ...) and pads
    # to 42 with pair 0 again. The gathered states arrive rank by rank; with the index the
    # metric must equal the metric of the pairs in their given order (its 10 contiguous folds).
    scores, issame = _fold_sensitive_pairs()
    expected = verification_metrics(scores, issame, n_folds=10)
    shards = _sharded_like_distributed_sampler(len(scores), world=3)
    assert sum(len(s) for s in shards) == 42  # one padded duplicate
    gathered = torch.cat(shards)
    metric = PairVerificationMetrics(n_folds=10)
    for part in gathered.split(4):
        metric.update(scores[part], issame[part], index=part)
    got = metric.compute()
    for key in VERIFICATION_KEYS:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)
    # the data are fold-sensitive: gather order without the index gives another accuracy
    unordered = PairVerificationMetrics(n_folds=10)
    unordered.update(scores[gathered[:41]], issame[gathered[:41]])
    assert unordered.compute()["accuracy"] != expected["accuracy"]


def test_index_duplicates_with_different_labels_raise() -> None:
    metric = PairVerificationMetrics(n_folds=2)
    metric.update(SCORES[:4], ISSAME[:4], index=torch.arange(4))
    metric.update(SCORES[4:], ISSAME[4:], index=torch.tensor([4, 5, 6, 1]))  # pair 1: genuine, now impostor
    with pytest.raises(ValueError, match="index 1 was given for both a genuine and an impostor pair"):
        metric.compute()


@pytest.mark.parametrize("first_with_index", [True, False])
def test_index_on_some_batches_only_raises(first_with_index: bool) -> None:
    metric = PairVerificationMetrics(n_folds=2)
    metric.update(SCORES[:4], ISSAME[:4], index=torch.arange(4) if first_with_index else None)
    with pytest.raises(ValueError, match="every batch or none"):
        metric.update(SCORES[4:], ISSAME[4:], index=None if first_with_index else torch.arange(4, 8))


def test_index_must_match_scores() -> None:
    metric = PairVerificationMetrics(n_folds=2)
    with pytest.raises(ValueError, match="index"):
        metric.update(SCORES, ISSAME, index=torch.arange(7))
