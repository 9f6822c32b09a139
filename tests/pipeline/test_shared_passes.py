"""The scoring passes the pipeline shares give the separate passes' values, with fewer forwards.

Deletion and insertion pair curves come from one pass (partners embedded once, the clean and
fully deleted probes scored once) and the confidence metrics take their clean score from the
view's curves; docs/metrics.md defines every value, so the shared passes must reproduce the
separate functions' curves and scores, and the forwarded images must be the ones counted by
hand below.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import Tensor, nn

from facexai.evaluate.settings import EvaluationSettings
from facexai.explain import SimilarityTarget, pair_targets
from facexai.metrics.functional import (
    average_drop,
    average_drop_in_deletion,
    curve_auc,
    increase_in_confidence,
    masked_scores,
    perturbation_curves,
    target_score_fn,
    verification_deletion_auc,
    verification_deletion_insertion_curves,
    verification_insertion_auc,
    verification_perturbation_curves,
)
from facexai.pipeline import ExplanationInputs, MetricSuite
from facexai.pipeline.views import NEG_VIEW, POS_VIEW, View

PAIRS = 3  # M: probes A and partners B
SIDE = 8  # the blur baseline needs images over 5 pixels per side


def small_embedder() -> nn.Module:
    """A seeded conv net with BatchNorm in eval mode: scores that depend on every pixel."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * SIDE * SIDE, 6)
    )
    model[1].running_mean.uniform_(-0.2, 0.2)
    model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


@contextmanager
def counted(model: nn.Module) -> Iterator[list[int]]:
    """Sizes of the batches the model forwards inside the block (a forward pre-hook)."""
    sizes: list[int] = []
    handle = model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    try:
        yield sizes
    finally:
        handle.remove()


def pair_data(seed: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """Interleaved pairs (2 M, 3, H, W), probe maps (M, H, W) with ties, labels (M,) with both kinds."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(2 * PAIRS, 3, SIDE, SIDE, generator=gen)
    maps = (torch.rand(PAIRS, SIDE, SIDE, generator=gen) * 4).round() / 4  # ties: the stable order decides
    return images, maps, torch.tensor([True, False, True])


@pytest.mark.parametrize("bases", [("zero", "zero"), ("zero", "blur")])
@pytest.mark.parametrize("chunk_size", [4, 128])
def test_joint_pair_curves_equal_the_separate_passes(bases: tuple[str, str], chunk_size: int) -> None:
    model = small_embedder()
    images, maps, _ = pair_data()
    steps = 4
    with counted(model) as separate:
        alone = [
            verification_perturbation_curves(model, images, maps, steps, mode, base, chunk_size)
            for mode, base in zip(("deletion", "insertion"), bases, strict=True)
        ]
    with counted(model) as joint:
        both = verification_deletion_insertion_curves(model, images, maps, steps, *bases, chunk_size=chunk_size)
    for got, want in zip(both, alone, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # separate: each pass embeds the M partners and scores M probes at steps + 1 points
    assert sum(separate) == 2 * (PAIRS + PAIRS * (steps + 1))
    # joint: partners once; insertion skips its clean end (deletion's first point) and, with one
    # baseline, its all-baseline start (deletion's last point)
    shared_ends = 2 if bases[0] == bases[1] else 1
    assert sum(joint) == PAIRS + PAIRS * (steps + 1) + PAIRS * (steps + 1 - shared_ends)


def test_masked_scores_with_known_clean_scores_score_two_images_per_sample() -> None:
    model = small_embedder()
    images, maps, _ = pair_data(2)
    maps = maps.repeat(2, 1, 1)  # one map per image
    target = SimilarityTarget(torch.randn(len(images), 6, generator=torch.Generator().manual_seed(3)))
    score = target_score_fn(model, target)
    with counted(model) as full:
        clean, kept, deleted = masked_scores(score, images, maps, chunk_size=5, with_index=True)
    given = torch.full_like(clean, 0.25)  # not the model's: shows the given scores are used as they are
    with counted(model) as reused:
        y, o, d = masked_scores(score, images, maps, chunk_size=5, with_index=True, clean=given)
    assert (sum(full), sum(reused)) == (3 * len(images), 2 * len(images))
    assert torch.equal(y, given)
    torch.testing.assert_close((o, d), (kept, deleted), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="one score per image"):
        masked_scores(score, images, maps, with_index=True, clean=given[:-1])


def suite_inputs(model: nn.Module) -> tuple[ExplanationInputs, list[View]]:
    """A batch of M pairs as the adapter reads it, with e+ and e- maps of both sides."""
    images, maps, issame = pair_data()
    stacked, target = pair_targets(model, images[0::2], images[1::2])
    with torch.no_grad():
        outputs = model(stacked)
    gen = torch.Generator().manual_seed(4)
    views = [
        View(POS_VIEW, torch.cat([maps, torch.rand(PAIRS, SIDE, SIDE, generator=gen)]), target),
        View(
            NEG_VIEW, torch.rand(2 * PAIRS, SIDE, SIDE, generator=gen), SimilarityTarget(target.reference, "dissimilar")
        ),
    ]
    return ExplanationInputs(stacked, target, outputs, pairs=True, issame=issame), views


def separate_values(model: nn.Module, inputs: ExplanationInputs, views: list[View], steps: int, pair_steps: int):
    """evaluate's default faithfulness values, each from its own function (no shared pass)."""
    values = {}
    for view in views:
        score = target_score_fn(model, view.target)
        deletion = perturbation_curves(score, inputs.images, view.maps, steps, "zero", "deletion", 5, True)
        insertion = perturbation_curves(score, inputs.images, view.maps, steps, "blur", "insertion", 5, True)
        clean, kept, deleted = masked_scores(score, inputs.images, view.maps, 5, True)
        suffix = view.spec.suffix
        values[f"deletion_auc_{suffix}"] = curve_auc(deletion).mean()
        values[f"insertion_auc_{suffix}"] = curve_auc(insertion).mean()
        values[f"average_drop_{suffix}"] = average_drop(clean, kept, "difference")
        values[f"increase_in_confidence_{suffix}"] = increase_in_confidence(clean, kept)
        values[f"average_drop_in_deletion_{suffix}"] = average_drop_in_deletion(clean, deleted, "difference")
    interleaved = torch.stack([inputs.images[:PAIRS], inputs.images[PAIRS:]], dim=1).flatten(0, 1)
    probe_maps, issame = views[0].maps[:PAIRS], inputs.issame
    assert issame is not None
    for mode, auc in (("deletion", verification_deletion_auc), ("insertion", verification_insertion_auc)):
        curves = verification_perturbation_curves(model, interleaved, probe_maps, pair_steps, mode, "zero", 5)
        values[f"verification_{mode}_auc"] = auc(curves, issame)
    return values


def test_suite_values_and_forwards_match_a_hand_count() -> None:
    model = small_embedder()
    inputs, views = suite_inputs(model)
    steps, pair_steps = 4, 2
    settings = EvaluationSettings(steps=steps, verification_steps=pair_steps, chunk_size=5)
    suite = MetricSuite(settings.metric_specs(), settings.mean, settings.std, "evaluate", settings.chunk_size)
    with counted(model) as sizes:
        suite.update("", views, inputs, model)
    n = 2 * PAIRS  # images per view
    # per view: deletion (zero) steps + 1 points, insertion (blur) steps more (its clean end is
    # deletion's first point); Average Drop, Increase in Confidence and Average Drop in Deletion
    # score the kept and the deleted image (their clean score is the curves' first point)
    per_view = n * (steps + 1) + n * steps + 2 * n
    # pairs: partners once, deletion pair_steps + 1 points, insertion pair_steps - 1 more (both
    # ends shared: one "zero" baseline)
    pairs = PAIRS + PAIRS * (pair_steps + 1) + PAIRS * (pair_steps - 1)
    assert sum(sizes) == 2 * per_view + pairs == 147
    assert max(sizes) <= settings.chunk_size
    got = suite.compute()
    want = separate_values(model, inputs, views, steps, pair_steps)
    assert set(want) <= set(got)
    for key, value in want.items():
        torch.testing.assert_close(got[key].float(), value.float(), rtol=0, atol=1e-5, msg=key)
