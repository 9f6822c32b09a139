"""FG-CAM warns when the BatchNorm statistics it walks through do not match the activations.

Thresholds (facexai.explain._lrp): a channel mismatches when its batch mean is more than one
running std from the running mean or its variance is off by more than 4x; FG-CAM warns above
25 % mismatched channels. Measured on face batches of 2-8 images (docs/explainers.md): three
BatchNorm-calibrated IResNets 0.000, the same networks with random running statistics
(tests/explain/conftest.py ``seeded``) 0.70-0.98, a calibrated network fed unnormalised
inputs 0.99.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from facexai.explain import BatchNormMismatchWarning, create_explainer, explain_pairs
from facexai.explain._lrp import batchnorm_mismatch
from tests.explain.conftest import seeded
from tests.thirdparty.arcface_torch import face_batch, make_arcface_model

SIDE = 64


@pytest.fixture(scope="module")
def calibrated() -> nn.Module:
    """arcface_torch-layout IResNet whose BatchNorm statistics were measured on faces."""
    return make_arcface_model((1, 2, 1, 1), num_features=32, widths=(8, 16, 16, 32), side=SIDE)


@pytest.fixture(scope="module")
def faces() -> tuple[torch.Tensor, torch.Tensor]:
    batch = face_batch(4, SIDE, seed=11)  # not the calibration batches (seeds 1000+)
    return batch[:2], batch[2:]


def test_calibrated_network_is_silent(calibrated, faces):
    with warnings.catch_warnings():
        warnings.simplefilter("error", BatchNormMismatchWarning)
        explain_pairs(create_explainer("fgcam"), calibrated, *faces)


def test_random_running_statistics_warn_once_with_the_share(calibrated, faces):
    mismatched = seeded(copy.deepcopy(calibrated), 0)
    with pytest.warns(BatchNormMismatchWarning) as record:
        explain_pairs(create_explainer("fgcam"), mismatched, *faces)
    assert len(record) == 1
    message = str(record[0].message)
    share = float(message.split("FG-CAM: ")[1].split("%")[0]) / 100
    assert share > 0.5  # measured 0.70-0.98 on random statistics; 0.25 is the threshold
    assert "calibrate BatchNorm statistics" in message


def test_inputs_not_normalised_as_in_training_warn(calibrated, faces):
    """Pixels in [0, 255] instead of (pixel - 127.5) / 127.5: the same statistics mismatch."""
    a, b = faces
    with pytest.warns(BatchNormMismatchWarning):
        explain_pairs(create_explainer("fgcam"), calibrated, a * 127.5 + 127.5, b * 127.5 + 127.5)


def test_channel_flags_follow_the_definition():
    """Running N(0, 1); inputs with channel means 0, 3, 0, 0 and stds 1, 1, 0.25, 3: channel 1
    is 3 running stds off, channel 2 has 1/16 and channel 3 9x the running variance."""
    norm = nn.BatchNorm2d(4).eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 4, 16, 16, generator=generator)
    x = x * torch.tensor([1.0, 1.0, 0.25, 3.0]).view(1, 4, 1, 1) + torch.tensor([0.0, 3.0, 0.0, 0.0]).view(1, 4, 1, 1)
    assert batchnorm_mismatch(norm, x).tolist() == [False, True, True, True]


def test_converted_graph_is_checked_on_the_batchnorms_it_keeps(calibrated, faces, tmp_path):
    """Folding removes the BatchNorms after convolutions; the ones after additions (each block's
    bn1 and the final bn2, 96 channels here) remain and still reveal random statistics."""
    from facexai.models.face_model import load_face_model
    from tests.thirdparty.arcface_torch import export_like_torch2onnx

    path = export_like_torch2onnx(seeded(copy.deepcopy(calibrated), 0), tmp_path / "m.onnx", side=SIDE)
    with pytest.warns(BatchNormMismatchWarning, match=r"of 96 BatchNorm channels"):
        explain_pairs(create_explainer("fgcam"), load_face_model(path), *faces)
