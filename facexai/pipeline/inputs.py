"""Turning a validation batch into explainer inputs, for facexai modules and plain ones alike.

A facexai LightningModule says itself what to explain (``explanation_inputs(batch)`` and
``explained_model``). Any other LightningModule is adapted by a few names: which attribute holds
the network, which batch keys hold images, labels, pairs and masks. Batches may be dicts,
``(images, labels[, masks])`` tuples or bare image tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from facexai.explain import ClassTarget, SimilarityTarget, Target, pair_targets
from facexai.explain.base import eval_mode, float32_interface

TARGETS = ("label", "prediction")


@dataclass
class ExplanationInputs:
    """What the explainers and metrics need from (the head of) one batch.

    Attributes:
        images: normalised images (M, 3, H, W); for pairs the stack [A; B] (M = 2 n).
        target: the explained target; for pairs "A against B's embedding" and vice versa (e+).
        outputs: the model's clean outputs for ``images`` (logits or embeddings).
        pairs: whether ``images`` is a stack of face pairs.
        labels: true class of each image (single images), for captions.
        masks: ground-truth regions (M, H, W), bool, aligned with ``images``.
        issame: genuine (True) or impostor pair (n,).
    """

    images: Tensor
    target: Target
    outputs: Tensor
    pairs: bool = False
    labels: Tensor | None = None
    masks: Tensor | None = None
    issame: Tensor | None = None


class BatchAdapter:
    """Reads validation batches into :class:`ExplanationInputs`.

    The arguments are the callback's; see :class:`~facexai.callbacks.ExplanationCallback`.
    ``evaluate`` uses the defaults (``model_attr=None`` for a bare face model).
    """

    def __init__(
        self,
        model_attr: str | None = "model",
        image_key: str = "image",
        label_key: str = "label",
        pair_keys: tuple[str, str] = ("image_a", "image_b"),
        issame_key: str = "issame",
        mask_key: str | None = "mask",
        pair_mask_keys: tuple[str, str] | None = ("mask_a", "mask_b"),
        target: str = "label",
    ) -> None:
        if target not in TARGETS:
            raise ValueError(f"Unknown target {target!r}. Available: {', '.join(TARGETS)}")
        if len(tuple(pair_keys)) != 2 or (pair_mask_keys is not None and len(tuple(pair_mask_keys)) != 2):
            raise ValueError(f"pair_keys and pair_mask_keys need two names each, got {pair_keys!r}, {pair_mask_keys!r}")
        self.model_attr, self.image_key, self.label_key = model_attr, image_key, label_key
        self.pair_keys, self.issame_key = tuple(pair_keys), issame_key
        self.mask_key = mask_key
        self.pair_mask_keys = None if pair_mask_keys is None else tuple(pair_mask_keys)
        self.target = target

    def resolve_model(self, pl_module: nn.Module) -> nn.Module:
        """The network to explain: ``explained_model`` if the module has one, else ``model_attr``.

        ``model_attr=None`` explains the LightningModule's own ``forward``.
        """
        try:
            model = pl_module.explained_model
        except (AttributeError, NotImplementedError):
            model = None
        if model is None:
            model = pl_module if self.model_attr is None else _get_attr(pl_module, self.model_attr)
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"ExplanationCallback: {type(pl_module).__name__}.{self.model_attr} must be an "
                f"nn.Module, got {type(model).__name__}"
            )
        return model

    def read(self, pl_module: nn.Module, batch: Any, max_samples: int) -> ExplanationInputs:
        """Explainer inputs for the first ``max_samples`` samples (pairs count as one) of ``batch``."""
        batch = head(batch, max_samples)
        model = self.resolve_model(pl_module)
        explanation_inputs = getattr(pl_module, "explanation_inputs", None)
        if callable(explanation_inputs):
            return self._from_module(type(pl_module).__name__, model, batch, *explanation_inputs(batch))
        return self._from_batch(model, batch)

    def _from_module(self, owner: str, model: nn.Module, batch: Any, images: Any, target: Any) -> ExplanationInputs:
        if not isinstance(images, Tensor) or not isinstance(target, Target):
            raise TypeError(
                f"{owner}.explanation_inputs must return (images Tensor, facexai Target), got "
                f"({type(images).__name__}, {type(target).__name__})"
            )
        first = batch.get(self.pair_keys[0]) if isinstance(batch, Mapping) else None
        pairs = isinstance(target, SimilarityTarget) and isinstance(first, Tensor) and len(images) == 2 * len(first)
        if pairs:
            return self._pair_inputs(model, batch, images, target)
        labels = target.labels if isinstance(target, ClassTarget) else None
        return self._single_inputs(model, batch, images, labels, target)

    def _from_batch(self, model: nn.Module, batch: Any) -> ExplanationInputs:
        if isinstance(batch, Mapping) and all(key in batch for key in self.pair_keys):
            first, second = (_images(batch[key], f"batch[{key!r}]") for key in self.pair_keys)
            images, target = pair_targets(model, first, second)
            return self._pair_inputs(model, batch, images, target)
        if isinstance(batch, Mapping) and self.image_key in batch:
            images = _images(batch[self.image_key], f"batch[{self.image_key!r}]")
            return self._single_inputs(model, batch, images, batch.get(self.label_key))
        if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor) and batch[0].dim() == 4:
            labels = batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None
            return self._single_inputs(model, batch, _images(batch[0], "batch[0]"), labels)
        if isinstance(batch, Tensor) and batch.dim() == 4:
            return self._single_inputs(model, batch, _images(batch, "batch"), None)
        raise ValueError(
            "ExplanationCallback cannot read this validation batch. Expected a dict with "
            f"{self.image_key!r} (and {self.label_key!r}), a dict with the pair keys "
            f"{list(self.pair_keys)} (and {self.issame_key!r}), a tuple (images, labels, ...) or an "
            f"image tensor (N, 3, H, W); got {describe(batch)}. Set image_key/label_key/pair_keys, "
            "or give the LightningModule an explanation_inputs(batch) -> (images, target) method"
        )

    def _single_inputs(
        self, model: nn.Module, batch: Any, images: Tensor, labels: Any, target: Target | None = None
    ) -> ExplanationInputs:
        outputs = eval_forward(model, images)
        labels = _labels(labels, len(images), self.label_key) if labels is not None else None
        if self.target == "prediction" and (target is None or isinstance(target, ClassTarget)):
            target = ClassTarget(_logits(outputs).argmax(1))
        elif target is None:
            if labels is None:
                raise ValueError(
                    f"ExplanationCallback: the batch has no labels (looked for key {self.label_key!r} or "
                    f"the second tuple element; got {describe(batch)}). Set label_key, or "
                    "target='prediction' to explain the predicted class"
                )
            target = ClassTarget(labels)
        masks = self._masks(batch, self.mask_key, images)
        return ExplanationInputs(images, target, outputs, labels=labels, masks=masks)

    def _pair_inputs(self, model: nn.Module, batch: Any, images: Tensor, target: Target) -> ExplanationInputs:
        n = len(images) // 2
        issame = batch.get(self.issame_key) if isinstance(batch, Mapping) else None
        if issame is not None:
            issame = torch.as_tensor(issame).reshape(-1).bool()
            if len(issame) != n:
                raise ValueError(f"batch[{self.issame_key!r}] has {len(issame)} entries for {n} pairs")
        masks = None
        if self.pair_mask_keys is not None:
            masks_a, masks_b = (self._masks(batch, key, images[:n]) for key in self.pair_mask_keys)
            masks = None if masks_a is None or masks_b is None else torch.cat([masks_a, masks_b])
        return ExplanationInputs(images, target, eval_forward(model, images), True, None, masks, issame)

    @staticmethod
    def _masks(batch: Any, key: str | None, images: Tensor) -> Tensor | None:
        if key is None or not isinstance(batch, Mapping) or batch.get(key) is None:
            return None
        masks = batch[key]
        if isinstance(masks, Tensor) and masks.dim() == 4 and masks.shape[1] == 1:
            masks = masks[:, 0]
        expected = (len(images), *images.shape[-2:])
        if not isinstance(masks, Tensor) or tuple(masks.shape) != expected:
            got = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
            raise ValueError(f"batch[{key!r}] must be masks of shape {expected} (N, H, W), got {got}")
        return masks.to(images.device) > 0


def eval_forward(model: nn.Module, images: Tensor) -> Tensor:
    """Clean outputs in eval mode and float32 (also of bf16/fp16 models), every module's flag restored."""
    with eval_mode(model), float32_interface(model), torch.no_grad(), torch.autocast(images.device.type, enabled=False):
        return model(images.float())


def head(batch: Any, n: int) -> Any:
    """The first ``n`` samples of every tensor in a (nested) batch, as fresh normal tensors.

    Cloning matters under ``trainer.validate``: batch tensors are inference tensors there, which
    autograd and in-place metric updates refuse outside inference mode.
    """
    if isinstance(batch, Tensor):
        return (batch[:n] if batch.dim() else batch).clone()
    if isinstance(batch, Mapping):
        return {key: head(value, n) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(head(value, n) for value in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(head(value, n) for value in batch)
    return batch


def describe(batch: Any) -> str:
    """A short description of a batch's structure for error messages."""
    if isinstance(batch, Tensor):
        return f"Tensor{tuple(batch.shape)}"
    if isinstance(batch, Mapping):
        return "dict with keys {" + ", ".join(f"{k!r}: {describe(v)}" for k, v in batch.items()) + "}"
    if isinstance(batch, (list, tuple)):
        return f"{type(batch).__name__} of (" + ", ".join(describe(v) for v in batch) + ")"
    return type(batch).__name__


def _get_attr(owner: nn.Module, dotted: str) -> Any:
    value: Any = owner
    for part in dotted.split("."):
        if not hasattr(value, part):
            raise ValueError(
                f"ExplanationCallback: {type(owner).__name__} has no attribute {dotted!r} holding the "
                "network to explain. Set model_attr to the attribute that holds it (e.g. "
                "'model', 'backbone', 'net.encoder'), model_attr=None to explain the module's own "
                "forward, or give the module an `explained_model` property"
            )
        value = getattr(value, part)
    return value


def _images(images: Any, where: str) -> Tensor:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(
            f"ExplanationCallback: {where} must be normalised float images (N, 3, H, W), got {describe(images)}"
            + ("" if not isinstance(images, Tensor) else f" of dtype {images.dtype}")
        )
    return images


def _labels(labels: Any, n: int, key: str) -> Tensor:
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or len(labels) != n or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(
            f"ExplanationCallback: labels ({key!r} or the second tuple element) must be integer "
            f"class indices ({n},), got dtype {labels.dtype} and shape {tuple(labels.shape)}"
        )
    return labels.long()


def _logits(outputs: Tensor) -> Tensor:
    if outputs.dim() != 2:
        raise ValueError(
            f"ExplanationCallback: target='prediction' needs logits (N, K), the model returned {tuple(outputs.shape)}"
        )
    return outputs
