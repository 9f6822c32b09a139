"""Explainers on bf16/fp16 models (Lightning ``precision="bf16-true"``/``"16-true"``).

The model computes in its own dtype; inputs, iterates and map arithmetic stay float32
(:func:`facexai.explain.base.float32_interface`), and FG-CAM runs its ratio rules with float32
copies of the weights. Maps are compared with the float32 model's by per-map Pearson
correlation.

Why 0.99: bf16 keeps 8 significant bits, so every weight and activation carries a relative
rounding error of up to 2**-9 = 0.2 %; through the ~10 layers of the test network these add up
to map differences of a few percent (relative L2). A relative L2 difference d lowers Pearson by
about d**2 / 2, so measured values of 0.998-1.000 (bf16) correspond to d <= 7 %, and 0.99 allows
d = 14 %. FG-CAM computed in bf16 arithmetic scored 0.79-0.93 and fails it; a bf16 FAME
iterate would drop every 1/255 step on pixels of magnitude above 1 (bf16 spacing 2**-7 there).
fp16 (11 significant bits) measured 0.9996-1.0000 and gets the same bound.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import Tensor, nn

from facexai.explain import create_explainer, explain_pairs
from tests.explain.conftest import TinyNet
from tests.thirdparty.arcface_torch import face_batch, make_arcface_model

SIDE = 64
#: minimum per-map Pearson correlation with the float32 model's maps (see the module docstring)
MIN_PEARSON = 0.99
#: every explainer, with options that keep the test fast
METHODS = {
    "gradcam": {},
    "gradcam++": {},
    "scorecam": {},
    "liftcam": {},
    "fame": {"iterations": 20},
    "corrrise": {"n_masks": 100, "patch_size": 16},
}
LOW = (torch.bfloat16, torch.float16)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """A BatchNorm-calibrated arcface_torch-layout IResNet (float32)."""
    return make_arcface_model((1, 2, 1, 1), num_features=32, widths=(8, 16, 16, 32), side=SIDE)


@pytest.fixture(scope="module")
def faces() -> tuple[Tensor, Tensor]:
    batch = face_batch(6, SIDE, seed=11)  # not the calibration batches (seeds 1000+)
    return batch[:3], batch[3:]


def pearson(a: Tensor, b: Tensor) -> Tensor:
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def pair_maps(explainer, model: nn.Module, faces: tuple[Tensor, Tensor], mode: str) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # e.g. LIFT-CAM's summation check
        return torch.cat(explain_pairs(explainer, model, *faces, mode=mode))


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("method", METHODS)
def test_maps_of_a_low_precision_model_match_the_float32_model(model, faces, method, dtype):
    low = copy.deepcopy(model).to(dtype)
    explainer = create_explainer(method, **METHODS[method])
    for mode in ("similar", "dissimilar"):
        expected = pair_maps(explainer, model, faces, mode)
        got = pair_maps(explainer, low, faces, mode)
        assert got.dtype == torch.float32
        assert got.shape == expected.shape
        assert pearson(got, expected).min() > MIN_PEARSON, (method, mode)
    assert all(p.dtype == dtype for p in low.parameters())  # the model is left as it was


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("base", ["gradcam", "scorecam"])
def test_fgcam_on_a_low_precision_model_computes_its_rules_in_float32(model, faces, base, dtype):
    """The maps match those of a float32 model holding the same (rounded) weights: measured
    Pearson >= 0.9997 (bf16) and 0.99998 (fp16); what is left comes from the partner
    embeddings, which each model computes in its own precision.

    Against the original float32 weights FG-CAM itself moves (bf16: Pearson down to 0.96 with
    the Grad-CAM base, 0.54 with the Score-CAM base on one face, computed in float32): the
    ratio rules are that sensitive to a 0.2 % change of the weights (docs/explainers.md).
    Computed in bf16 arithmetic the maps reached only 0.79-0.93 with the Grad-CAM base.
    """
    low = copy.deepcopy(model).to(dtype)
    rounded = copy.deepcopy(low).float()
    explainer = create_explainer("fgcam", base=base)
    for mode in ("similar", "dissimilar"):
        got, expected = pair_maps(explainer, low, faces, mode), pair_maps(explainer, rounded, faces, mode)
        assert pearson(got, expected).min() > 0.998, mode


@torch.no_grad()
def calibrated_classifier() -> nn.Module:
    """TinyNet (5 classes) with BatchNorm statistics measured by train-mode forwards on data."""
    torch.manual_seed(0)
    model = TinyNet(5)
    for norm in model.modules():
        if isinstance(norm, nn.modules.batchnorm._BatchNorm):
            norm.momentum = None  # cumulative average over the calibration batches
    model.train()
    for seed in range(4):
        model(torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(100 + seed)))
    return model.eval()


@pytest.mark.parametrize("method", ["gradcam", "liftcam", "fame"])
def test_bf16_classifier_explains_its_predicted_class(method):
    model = calibrated_classifier()
    low = copy.deepcopy(model).to(torch.bfloat16)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    explainer = create_explainer(method, **METHODS[method])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        expected, got = explainer(model, images), explainer(low, images.bfloat16())
    assert pearson(got, expected).min() > MIN_PEARSON
