"""The validation samples ``evaluate`` explains: the head of the first loader, in explainer-sized chunks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from facexai.evaluate.settings import EvaluationSettings
from facexai.pipeline import BatchAdapter, ExplanationInputs, head


def collect_samples(datamodule: Any, max_samples: int) -> Any:
    """The first ``max_samples`` samples of the first validation loader, as one batch."""
    if hasattr(datamodule, "setup"):
        datamodule.setup("validate")
    loader = datamodule.val_dataloader()
    if isinstance(loader, (list, tuple)):
        loader = loader[0]  # the first named validation set
    batches, count = [], 0
    for batch in loader:
        part = head(batch, max_samples - count)
        batches.append(part)
        count += batch_length(part)
        if count >= max_samples:
            break
    if not batches:
        raise ValueError("the datamodule's validation loader yielded no batch")
    return concat_batches(batches)


def batch_length(batch: Any) -> int:
    """Samples in a (nested) batch: the length of its first tensor.

    >>> batch_length({"image": torch.zeros(3, 3, 8, 8), "label": torch.zeros(3)})
    3
    """
    if isinstance(batch, Tensor):
        return len(batch)
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else []
    for value in values:
        if isinstance(value, (Tensor, Mapping, list, tuple)):
            return batch_length(value)
    raise ValueError("cannot tell the batch size: the batch holds no tensor")


def concat_batches(batches: list[Any]) -> Any:
    """Concatenate structurally equal batches along the sample dimension."""
    first = batches[0]
    if isinstance(first, Tensor):
        return torch.cat(batches) if first.dim() else first
    if isinstance(first, Mapping):
        return {key: concat_batches([b[key] for b in batches]) for key in first}
    if isinstance(first, (list, tuple)):
        return type(first)(concat_batches(list(parts)) for parts in zip(*batches, strict=True))
    return first


def slice_batch(batch: Any, start: int, stop: int, device: torch.device) -> Any:
    """Samples ``start:stop`` of a (nested) batch, on ``device``."""
    if isinstance(batch, Tensor):
        return (batch[start:stop] if batch.dim() else batch).to(device)
    if isinstance(batch, Mapping):
        return {key: slice_batch(value, start, stop, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(slice_batch(value, start, stop, device) for value in batch)
    return batch


def adapter_for(module: nn.Module) -> BatchAdapter:
    """LightningModules hold their network in ``.model`` (or name it); a bare face model is the network."""
    import pytorch_lightning as pl

    return BatchAdapter() if isinstance(module, pl.LightningModule) else BatchAdapter(model_attr=None)


def explanation_chunks(module: nn.Module, batch: Any, settings: EvaluationSettings) -> list[ExplanationInputs]:
    """Explainer inputs per chunk of ``batch_size`` samples (pair targets computed once, here)."""
    adapter = adapter_for(module)
    device = torch.device(settings.device)
    total = batch_length(batch)
    return [
        adapter.read(module, slice_batch(batch, start, start + settings.batch_size, device), settings.batch_size)
        for start in range(0, total, settings.batch_size)
    ]


def gallery_inputs(module: nn.Module, batch: Any, settings: EvaluationSettings) -> ExplanationInputs:
    """The first chunk again (images, clean outputs, issame): the samples whose maps the gallery shows."""
    device = torch.device(settings.device)
    chunk = slice_batch(batch, 0, settings.batch_size, device)
    return adapter_for(module).read(module, chunk, settings.batch_size)
