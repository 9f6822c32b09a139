"""Tiny models, data and trainers for the callback tests (importable by spawned DDP workers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import timm
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

from facexai.data.synthetic_module import SyntheticFacesDataModule
from facexai.models.modules import ClassifierModule, VerificationModule

#: deletion/insertion with 4 steps keep the perturbation scoring to a few dozen tiny images
FAST_METRICS: dict[str, dict[str, Any]] = {
    "deletion_auc": {"steps": 4},
    "insertion_auc": {"steps": 4},
    "energy_pointing_game": {},
}


class PlainClassifier(pl.LightningModule):
    """What a user might already have: a timm ResNet under ``self.model``, tuple batches."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.model = timm.create_model("resnet10t", num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def tuple_loaders(n_train: int = 8, n_val: int = 6, batch_size: int = 3) -> tuple[DataLoader, DataLoader]:
    """Seeded random (image, label) tuples at 32 px, 4 classes."""
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(n_train + n_val, 3, 32, 32, generator=gen) * 2 - 1
    labels = torch.arange(n_train + n_val) % 4
    train = TensorDataset(images[:n_train], labels[:n_train])
    val = TensorDataset(images[n_train:], labels[n_train:])
    return DataLoader(train, batch_size=batch_size), DataLoader(val, batch_size=batch_size)


def faces(task: str, batch_size: int = 4) -> SyntheticFacesDataModule:
    """Four identities at 32 px; validation yields 8 pairs or 8 images."""
    return SyntheticFacesDataModule(
        task=task,
        num_identities=4,
        images_per_identity=2,
        num_val_identities=4,
        val_images_per_identity=2,
        num_val_pairs=8,
        image_size=32,
        batch_size=batch_size,
    )


def verification_module() -> VerificationModule:
    torch.manual_seed(0)
    return VerificationModule(
        backbone="iresnet_mini", num_identities=4, embedding_size=32, backbone_kwargs={"img_size": 32}
    )


def classifier_module() -> ClassifierModule:
    torch.manual_seed(0)
    return ClassifierModule(
        backbone="iresnet_mini",
        num_classes=4,
        class_names=["ann", "bob", "cy", "dee"],
        backbone_kwargs={"img_size": 32},
    )


def trainer(tmp_path: Path, callbacks: list[pl.Callback], **kwargs: Any) -> pl.Trainer:
    """A quiet CPU trainer: 2 training batches, 1 validation batch, TensorBoard in tmp_path."""
    options: dict[str, Any] = {
        "max_epochs": 1,
        "limit_train_batches": 2,
        "limit_val_batches": 1,
        "limit_test_batches": 1,
        "num_sanity_val_steps": 0,
        "accelerator": "cpu",
        "devices": 1,
        "logger": TensorBoardLogger(str(tmp_path), name="tb", version=0),
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    options.update(kwargs)
    return pl.Trainer(callbacks=callbacks, **options)


def events(log_dir: str | Path) -> EventAccumulator:
    """Everything TensorBoard would show from ``log_dir``."""
    return EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0}).Reload()


class GridCountingCallback:
    """Mixin recording, per rank, how many grids the callback rendered (ranks are processes)."""

    record_dir: str

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        Path(self.record_dir, f"rank{trainer.global_rank}.txt").write_text(str(len(self.last_grids)))
