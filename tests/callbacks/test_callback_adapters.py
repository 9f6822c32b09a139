"""BatchAdapter: dict, tuple and pair batches of modules that know nothing about facexai."""

from __future__ import annotations

import pytest
import torch
from callback_models import PlainClassifier

from facexai.callbacks import BatchAdapter
from facexai.explain import ClassTarget, SimilarityTarget


@pytest.fixture(scope="module")
def module() -> PlainClassifier:
    torch.manual_seed(0)
    return PlainClassifier().eval()


def _images(n: int) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(n)) * 2 - 1


def test_dict_batch_with_custom_keys_is_cut_to_max_samples(module: PlainClassifier) -> None:
    batch = {"img": _images(5), "y": torch.tensor([3, 1, 2, 0, 1]), "seg": torch.ones(5, 1, 32, 32)}
    inputs = BatchAdapter(image_key="img", label_key="y", mask_key="seg").read(module, batch, max_samples=2)
    assert not inputs.pairs
    assert inputs.images.shape == (2, 3, 32, 32)
    assert isinstance(inputs.target, ClassTarget)
    assert inputs.target.labels.tolist() == [3, 1]
    assert inputs.masks.shape == (2, 32, 32)
    assert inputs.masks.dtype == torch.bool
    torch.testing.assert_close(inputs.outputs, module(batch["img"][:2]))


def test_prediction_target_explains_the_argmax(module: PlainClassifier) -> None:
    images = _images(4)
    inputs = BatchAdapter(target="prediction").read(module, (images, torch.zeros(4, dtype=torch.long)), 8)
    assert inputs.target.labels.tolist() == module(images).argmax(1).tolist()
    assert inputs.labels.tolist() == [0, 0, 0, 0]  # the true labels stay for the captions


def test_pair_batch_of_a_plain_module_gives_both_sides_against_the_partner(module: PlainClassifier) -> None:
    batch = {"left": _images(3), "right": _images(4)[:3], "same": torch.tensor([1, 0, 1])}
    inputs = BatchAdapter(pair_keys=("left", "right"), issame_key="same").read(module, batch, 8)
    assert inputs.pairs
    assert inputs.images.shape == (6, 3, 32, 32)
    assert inputs.masks is None
    assert isinstance(inputs.target, SimilarityTarget)
    assert inputs.target.mode == "similar"
    with torch.no_grad():
        partner = module(batch["right"])
    torch.testing.assert_close(inputs.target.reference[:3], partner)
    assert inputs.issame.tolist() == [True, False, True]


def test_inference_tensors_become_normal_tensors(module: PlainClassifier) -> None:
    with torch.inference_mode():
        batch = (_images(2), torch.tensor([0, 1]))
    with torch.inference_mode(False):
        inputs = BatchAdapter().read(module, batch, 8)
    assert not inputs.images.is_inference()
    assert not inputs.target.labels.is_inference()


@pytest.mark.parametrize(
    ("adapter", "batch", "match"),
    [
        (BatchAdapter(), _images(2), r"no labels .*target='prediction'"),
        (
            BatchAdapter(),
            (_images(2), torch.tensor([0.5, 1.0])),
            r"integer class indices \(2,\), got dtype torch.float32",
        ),
        (
            BatchAdapter(),
            {"image": torch.zeros(2, 32, 32), "label": torch.tensor([0, 1])},
            r"batch\['image'\] must be normalised float images \(N, 3, H, W\), got Tensor\(2, 32, 32\)",
        ),
        (
            BatchAdapter(),
            {"image": _images(2), "label": torch.tensor([0, 1]), "mask": torch.ones(2, 8, 8)},
            r"batch\['mask'\] must be masks of shape \(2, 32, 32\)",
        ),
        (BatchAdapter(), ["paths.jpg"], r"cannot read this validation batch.*got list of \(str\)"),
    ],
)
def test_unreadable_batches_say_what_was_expected_and_what_came(
    module: PlainClassifier, adapter: BatchAdapter, batch: object, match: str
) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        adapter.read(module, batch, 8)
