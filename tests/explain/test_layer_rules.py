"""The one layer-rule table of LIFT-CAM and FG-CAM, and FG-CAM's traceable form.

Each kind of layer gets one row; the two methods read their own column of it, so a layer they
classify differently is a visible, documented entry rather than two tables drifting apart.
"""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from facexai.explain import _lrp, create_explainer, liftcam
from facexai.explain.base import explanation_mode
from facexai.explain.layer_rules import LAYER_RULES, layer_rule
from facexai.explain.targets import ClassTarget


class SEModule(nn.Module):  # a channel-attention gate, known by its class name
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


LookAlike = type("LookAlike", (nn.Module,), {"__module__": "somepackage.activations"})


@pytest.mark.parametrize(
    ("module", "kind", "lift", "fg"),
    [
        (nn.MaxPool2d(2), "max_pool", "max", None),
        (nn.AdaptiveMaxPool2d(1), "max_pool", "max", None),
        (nn.Conv2d(1, 1, 1), "linear", None, "linear"),
        (nn.Linear(2, 2), "linear", None, "linear"),
        (nn.ReLU(), "relu_like", "rescale", None),
        (nn.PReLU(), "relu_like", "rescale", None),
        (nn.Dropout(), "pass_through", None, None),
        (nn.Identity(), "pass_through", None, None),
        (nn.Softmax(dim=1), "not_elementwise", None, None),
        (nn.BatchNorm2d(1), "norm", None, "elementwise"),
        (nn.LayerNorm(2), "norm", None, "elementwise"),
        (nn.GELU(), "activation", "rescale", "elementwise"),
        (timm.layers.activations.GELU(), "activation", "rescale", "elementwise"),
        (SEModule(), "gate", None, "elementwise"),
        (LookAlike(), "activation_lookalike", "rescale", None),
        (nn.AdaptiveAvgPool2d(1), "other", None, None),
    ],
)
def test_each_kind_and_each_methods_rule(module, kind, lift, fg):
    rule = layer_rule(module)
    assert (rule.kind, rule.liftcam, rule.fgcam) == (kind, lift, fg)
    assert liftcam.rule_kind(module) == lift
    assert _lrp.rule_kind(module) == fg


def test_the_table_ends_with_a_catch_all_and_names_each_kind_once():
    kinds = [rule.kind for rule in LAYER_RULES]
    assert len(kinds) == len(set(kinds))
    assert LAYER_RULES[-1].matches(nn.Module())


@pytest.mark.filterwarnings("ignore::facexai.explain.BatchNormMismatchWarning")  # seeded statistics
def test_fgcam_traceable_form_gives_the_same_maps(classifier, images):
    """The branch-free z+ rule drops no term the shortcut keeps: same raw maps, to float rounding."""
    explainer = create_explainer("fgcam")
    target = ClassTarget(torch.arange(len(images)) % 5)
    with explanation_mode(classifier):
        plain = explainer.explain(classifier, images, target)
        traced = explainer.explain_for_tracing(classifier, images, target)
    torch.testing.assert_close(traced, plain, rtol=1e-4, atol=1e-6 * float(plain.abs().max()))
