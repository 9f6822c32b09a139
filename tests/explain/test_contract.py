"""The explainer contract of docs/design.md, checked for every registered explainer.

Parametrised over ``available_explainers()``, so a method file that registers itself is covered
without touching this file; ``OPTIONS`` only makes the expensive ones cheap.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from facexai.explain import ClassTarget, SimilarityTarget, available_explainers, create_explainer
from facexai.explain.layers import last_feature_layer

NAMES = available_explainers()
#: cheap options per method (the defaults follow the papers and cost minutes on a CPU)
OPTIONS: dict[str, dict] = {
    "fame": {"iterations": 3},
    "corrrise": {"n_masks": 32, "patch_size": 8},
    "scorecam": {"batch_size": 32},
}
LABELS = [0, 3, 1]


def make(name: str, **options: object):
    return create_explainer(name, **{**OPTIONS.get(name, {}), **options})


def takes(name: str, option: str) -> bool:
    return option in inspect.signature(type(create_explainer(name, **OPTIONS.get(name, {})))).parameters


def all_hooks(model: nn.Module) -> list:
    hooks = []
    for module in model.modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
        ):
            hooks.extend(getattr(module, attr, {}).values())
    return hooks + list(nn.modules.module._global_forward_hooks.values())


def task(kind: str, models, pair_target) -> tuple[nn.Module, object]:
    """(model, target) for a classifier or for a verification model in either mode."""
    if kind == "class":
        return models.classifier("mlp"), ClassTarget(LABELS)
    return models.embedder(), pair_target(kind)


TASKS = ["class", "similar", "dissimilar"]


@pytest.mark.parametrize("kind", TASKS)
@pytest.mark.parametrize("name", NAMES)
def test_output_contract(name, kind, images, models, pair_target):
    model, target = task(kind, models, pair_target)
    maps = make(name)(model, images, target)
    assert maps.shape == (3, 32, 32)
    assert maps.dtype == torch.float32
    assert maps.device == images.device
    assert torch.isfinite(maps).all()
    assert maps.min() >= 0
    assert maps.max() <= 1
    peak = maps.flatten(1).amax(1)
    assert ((peak == 1) | (peak == 0)).all(), "min-max normalised, or all zeros (no evidence)"


@pytest.mark.parametrize("name", NAMES)
def test_target_none_explains_predicted_class(name, images, models):
    model = models.classifier("mlp")
    with torch.no_grad():
        predicted = model(images).argmax(1)
    explainer = make(name)
    assert torch.equal(explainer(model, images), explainer(model, images, ClassTarget(predicted)))


@pytest.mark.parametrize("kind", TASKS)
@pytest.mark.parametrize("name", NAMES)
def test_batch_invariance(name, kind, images, models, pair_target):
    model, target = task(kind, models, pair_target)
    explainer = make(name)
    batched = explainer(model, images, target)
    for i in range(len(images)):
        single = explainer(model, images[i : i + 1], target.select(torch.tensor([i])))
        # float32 kernels round differently per batch size (~1e-7 relative in the embedding);
        # the cosine's gradient and the min-max stretch that to ~1e-5 in the worst pixel
        torch.testing.assert_close(single[0], batched[i], atol=5e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_no_hooks_left_and_inputs_untouched(name, images, models):
    model = models.classifier("mlp")
    before = images.clone()
    make(name)(model, images, ClassTarget(LABELS))
    assert all_hooks(model) == []
    assert torch.equal(images, before)
    assert not images.requires_grad


class Bomb(nn.Module):
    """Identity that raises once armed: an exception from inside the model, mid-explanation."""

    armed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.armed:
            raise RuntimeError("boom")
        return x


@pytest.mark.parametrize("name", NAMES)
def test_no_hooks_and_modes_restored_after_exception(name, images, models):
    model = models.classifier("mlp")
    bomb = Bomb()
    model.head = nn.Sequential(bomb, *model.head)
    options = {"target_layer": last_feature_layer(model, images)} if takes(name, "target_layer") else {}
    model.train()
    bomb.armed = True
    with pytest.raises(RuntimeError, match="boom"):
        make(name, **options)(model, images, ClassTarget(LABELS))
    assert all_hooks(model) == []
    assert all(module.training for module in model.modules())


@pytest.mark.parametrize("name", NAMES)
def test_no_hooks_after_target_error(name, images, models):
    model = models.embedder()
    wrong = SimilarityTarget(torch.randn(3, 7))
    with pytest.raises(ValueError, match="dimension"):
        make(name)(model, images, wrong)
    assert all_hooks(model) == []


@pytest.mark.parametrize("name", NAMES)
def test_train_flags_and_buffers_restored(name, images, models):
    model = models.classifier("mlp")
    model.train()
    model.features[1].eval()  # a mixed state must come back exactly
    flags = [m.training for m in model.modules()]
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    maps = make(name)(model, images, ClassTarget(LABELS))
    assert [m.training for m in model.modules()] == flags
    for key, value in model.state_dict().items():
        assert torch.equal(value, buffers[key]), f"{key} changed: BatchNorm ran in train mode"
    model.eval()
    torch.testing.assert_close(make(name)(model, images, ClassTarget(LABELS)), maps, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_grads_and_requires_grad_untouched(name, images, models):
    model = models.classifier("mlp")
    params = list(model.parameters())
    params[0].requires_grad_(False)
    sentinel = torch.full_like(params[2], 7.0)
    params[2].grad = sentinel.clone()
    flags = [p.requires_grad for p in params]
    make(name)(model, images, ClassTarget(LABELS))
    assert [p.requires_grad for p in params] == flags
    assert torch.equal(params[2].grad, sentinel)
    assert all(p.grad is None for i, p in enumerate(params) if i != 2)


def inner_target(kind: str, model: nn.Module, images: torch.Tensor):
    """A target built from scratch (inside whatever grad mode is active)."""
    if kind == "class":
        return ClassTarget(torch.tensor(LABELS))
    return SimilarityTarget(model(images.flip(0)), mode=kind)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("kind", ["class", "dissimilar"])
@pytest.mark.parametrize("name", NAMES)
def test_works_under_no_grad_and_inference_mode(name, kind, context, images, models):
    model = models.classifier("mlp") if kind == "class" else models.embedder()
    with torch.no_grad():
        expected = make(name)(model, images, inner_target(kind, model, images))
    with context():
        # images and targets made inside the context, as in Lightning's validate/predict loops
        inner_images = images.clone()
        maps = make(name)(model, inner_images, inner_target(kind, model, inner_images))
    assert not maps.requires_grad
    torch.testing.assert_close(maps.clone(), expected, atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu(name, images, models):
    model = models.classifier("mlp")
    expected = make(name)(model, images, ClassTarget(LABELS))
    maps = make(name)(model.cuda(), images.cuda(), ClassTarget(torch.tensor(LABELS).cuda()))
    assert maps.device.type == "cuda"
    torch.testing.assert_close(maps.cpu(), expected, atol=1e-3, rtol=0)


# ---- bad input ---------------------------------------------------------------------------------


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match="Unknown explainer") as error:
        create_explainer("gradkam")
    assert all(name in str(error.value) for name in NAMES)


BAD_IMAGES = {
    "3-D": torch.zeros(3, 32, 32),
    "1 channel": torch.zeros(3, 1, 32, 32),
    "NaN": torch.zeros(3, 3, 32, 32).index_put_((torch.tensor([1]),), torch.tensor(float("nan"))),
    "Inf": torch.zeros(3, 3, 32, 32).index_put_((torch.tensor([2]),), torch.tensor(float("inf"))),
}


@pytest.mark.parametrize("bad", list(BAD_IMAGES))
@pytest.mark.parametrize("name", NAMES)
def test_bad_images_raise(name, bad, models):
    with pytest.raises(ValueError, match=r"shape|NaN"):
        make(name)(models.classifier(), BAD_IMAGES[bad], ClassTarget(LABELS))


@pytest.mark.parametrize("name", NAMES)
def test_target_length_must_match_batch(name, images, models):
    with pytest.raises(ValueError, match="one target per image"):
        make(name)(models.classifier(), images, ClassTarget([0, 1]))


@pytest.mark.parametrize("name", NAMES)
def test_reference_dimension_must_match_embedding(name, images, models):
    with pytest.raises(ValueError, match="dimension"):
        make(name)(models.embedder(), images, SimilarityTarget(torch.randn(3, 15)))


@pytest.mark.parametrize("name", [n for n in NAMES if takes(n, "target_layer")])
def test_bad_target_layer_lists_near_matches(name, images, models):
    with pytest.raises(ValueError, match="features"):
        make(name, target_layer="featurs")(models.classifier(), images, ClassTarget(LABELS))


@pytest.mark.parametrize("name", [n for n in NAMES if takes(n, "target_layer")])
def test_target_layer_must_output_a_feature_map(name, images, models):
    with pytest.raises(ValueError, match="4-D"):
        make(name, target_layer="head.2")(models.classifier(), images, ClassTarget(LABELS))


def positive_options(name: str) -> list[str]:
    """Options whose default is a positive number: zero and negative values must be refused."""
    parameters = inspect.signature(type(make(name))).parameters.values()
    return [
        p.name
        for p in parameters
        if isinstance(p.default, (int, float)) and not isinstance(p.default, bool) and p.default > 0
    ]


@pytest.mark.parametrize(
    ("name", "option"),
    [(n, o) for n in NAMES for o in positive_options(n)] or [pytest.param(None, None)],
)
@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_options_raise(name, option, value):
    with pytest.raises((ValueError, TypeError), match=option):
        create_explainer(name, **{option: value})
