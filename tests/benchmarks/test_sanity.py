"""``benchmarks/sanity.py`` helpers: which layers the randomisation touches, option overrides."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import timm
import torch

import facexai.models  # noqa: F401  (registers the IResNets in timm)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import sanity  # noqa: E402


def test_randomise_top_redraws_only_the_named_layers() -> None:
    torch.manual_seed(0)
    model = timm.create_model("iresnet_mini", img_size=32, num_classes=16).eval()
    clone = sanity.randomise_top(model, ("layer4", "fc"))
    before, after = dict(model.named_parameters()), dict(clone.named_parameters())
    for name, value in before.items():
        changed = not torch.equal(value, after[name])
        top = name.startswith(("layer4.", "fc."))
        # BatchNorm and PReLU reset to constants (1, 0, 0.25) that a fresh model already holds
        if top and ("conv" in name or name.startswith("fc.")):
            assert changed, name
        if not top:
            assert not changed, name
    assert not clone.training


def test_every_cascade_level_exists_in_the_demo_backbone_and_grows() -> None:
    model = timm.create_model("iresnet_mini", img_size=32, num_classes=16)
    names = {name for name, _ in model.named_children()}
    previous: set[str] = set()
    for _, level in sanity.CASCADE:
        assert set(level) <= names
        assert previous < set(level)
        previous = set(level)
    assert previous == names - {"dropout"}  # the last level randomises every parameter


def test_unknown_layers_raise() -> None:
    with pytest.raises(ValueError, match="none of the layers"):
        sanity.randomise_top(torch.nn.Linear(2, 2), ("layer4",))


def test_option_overrides_merge_into_the_fast_options() -> None:
    options = sanity.parse_options(["fame.blur_kernel=1", 'gradcam.target_layer="layer3"'])
    assert options["fame"] == {**sanity.FAST_OPTIONS["fame"], "blur_kernel": 1}
    assert options["gradcam"] == {"target_layer": "layer3"}
    assert "blur_kernel" not in sanity.FAST_OPTIONS["fame"]  # the defaults are not modified
    with pytest.raises(SystemExit, match=r"METHOD\.OPTION=VALUE"):
        sanity.parse_options(["fame=1"])
