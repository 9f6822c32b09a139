"""Bad configurations fail when the callback is built or set up, with messages that help."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from callback_models import PlainClassifier, trainer, tuple_loaders
from torch.utils.data import DataLoader

from facexai.callbacks import ExplanationCallback


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"explainers": ["gradkam"]}, ValueError, r"Unknown explainer 'gradkam'\. Available: .*gradcam"),
        ({"explainers": {"gradcam": {"layer": "x"}}}, ValueError, r"Invalid options .*'gradcam'.*target_layer"),
        ({"explainers": "gradcam"}, TypeError, r"list of names"),
        (
            {"explainers": {"a": {"method": "gradcam"}, "b": {"method": "nope"}}},
            ValueError,
            r"Unknown explainer 'nope'",
        ),
        ({"metrics": ["deletion"]}, ValueError, r"Unknown metric 'deletion'\. Available: .*deletion_auc"),
        ({"metrics": ["randomisation_sanity"]}, ValueError, r"cannot be computed .*Supported: .*deletion_auc"),
        (
            {"metrics": {"deletion_auc": {"stepz": 3}}},
            ValueError,
            r"Invalid options \[.stepz.\] for metric .deletion_auc.\. Accepted: \[.steps., .baseline.\]",
        ),
        ({"metrics": {"deletion_auc": {"score": "logit"}}}, ValueError, r"'score' is set by ExplanationCallback"),
        ({"metrics": {"deletion_auc": {"steps": 0}}}, ValueError, r"steps"),
        ({"every_n_epochs": 0}, ValueError, r"every_n_epochs must be a positive integer"),
        ({"target": "pred"}, ValueError, r"Unknown target 'pred'\. Available: label, prediction"),
        (
            {"colormap": "jett"},
            ValueError,
            r"Unknown colormap 'jett'\. Did you mean jet.*Valid: any name in matplotlib\.colormaps",
        ),
        ({"colormap": None}, ValueError, r"Unknown colormap None\..*e\.g\. inferno"),
        ({"tile_size": 0}, ValueError, r"tile_size must be a positive integer, got 0"),
        ({"tile_size": 112.0}, ValueError, r"tile_size must be a positive integer, got 112\.0"),
        ({"tile_size": "112"}, ValueError, r"tile_size must be a positive integer, got '112'"),
        ({"tile_size": True}, ValueError, r"tile_size must be a positive integer, got True"),
        ({"explainers": ["compare"]}, ValueError, r"Unknown explainer 'compare'\. Available: .*fame"),
        (
            {"explainers": {"compare": {"method": "gradcam"}}},
            ValueError,
            r"label 'compare' is reserved for the comparison grids",
        ),
    ],
)
def test_bad_options_fail_at_construction(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ExplanationCallback(**kwargs)


def test_any_matplotlib_colormap_is_accepted() -> None:
    assert ExplanationCallback(colormap="jet").colormap == "jet"  # the explanation papers' look
    assert ExplanationCallback(colormap="gray_r").colormap == "gray_r"


class _Counting(PlainClassifier):
    """Counts the steps that ran, to show that errors come before any work."""

    def __init__(self) -> None:
        super().__init__()
        self.steps = 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.steps += 1
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.steps += 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"target_layer": "layer9"},
            r"explainer 'gradcam' has target_layer='layer9': Layer 'layer9' is not in .*Closest matches: layer",
        ),
        ({"model_attr": "net"}, r"_Counting has no attribute 'net' holding the network to explain"),
    ],
)
def test_missing_layer_or_network_fails_in_setup(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    _, val = tuple_loaders()
    module = _Counting()
    with pytest.raises(ValueError, match=match):
        trainer(tmp_path, [ExplanationCallback(**kwargs)], logger=False).validate(module, val, verbose=False)
    assert module.steps == 0


def test_unreadable_batch_fails_in_the_sanity_check_before_training(tmp_path: Path) -> None:
    train, _ = tuple_loaders()
    items = [{"pixels": torch.zeros(3, 32, 32), "target": torch.tensor(0)} for _ in range(4)]
    module = _Counting()
    run = trainer(tmp_path, [ExplanationCallback()], logger=False, num_sanity_val_steps=1)
    with pytest.raises(
        ValueError,
        match=r"cannot read this validation batch.*'image'.*got dict with keys \{'pixels': Tensor\(2, 3, 32, 32\)",
    ):
        run.fit(module, train, DataLoader(items, batch_size=2))
    assert module.steps == 1  # the one sanity validation step, no training step
