"""Face-pair targets: the partner's embedding is frozen, and no module's mode is changed."""

from __future__ import annotations

import torch
from torch import nn

from facexai.explain import create_explainer, explain_pairs, pair_targets
from tests.explain.conftest import make_embedder


def training_model_with_frozen_norms() -> tuple[nn.Module, list[nn.Module]]:
    """A model in train mode whose BatchNorms were frozen (eval), as in fine-tuning recipes."""
    model = make_embedder().train()
    frozen = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in frozen:
        norm.eval()
    return model, frozen


def modes(model: nn.Module) -> dict[str, bool]:
    return {name: module.training for name, module in model.named_modules()}


def pair_batches() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return torch.randn(2, 3, 32, 32, generator=generator), torch.randn(2, 3, 32, 32, generator=generator)


def test_pair_targets_restores_every_modules_own_mode():
    model, frozen = training_model_with_frozen_norms()
    before = modes(model)
    pair_targets(model, *pair_batches())
    assert modes(model) == before
    assert not any(norm.training for norm in frozen)  # model.train(True) switched them back on


def test_pair_targets_embeds_in_eval_mode_without_touching_the_statistics():
    model, _ = training_model_with_frozen_norms()
    model.features[1].train()  # one BatchNorm that *would* update in train mode
    running = model.features[1].running_mean.clone()
    images_a, images_b = pair_batches()
    _, target = pair_targets(model, images_a, images_b)
    torch.testing.assert_close(model.features[1].running_mean, running)
    with torch.no_grad():
        expected = model.eval()(torch.cat([images_b, images_a]))
    torch.testing.assert_close(target.reference, expected)


def test_explain_pairs_restores_every_modules_own_mode():
    model, _frozen = training_model_with_frozen_norms()
    before = modes(model)
    explain_pairs(create_explainer("gradcam"), model, *pair_batches())
    assert modes(model) == before
