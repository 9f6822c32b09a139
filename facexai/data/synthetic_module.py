"""SyntheticFacesDataModule: the embedded default data, generated in code at ``setup``."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from facexai.data.loaders import make_loader
from facexai.data.synthetic import generate_faces, identity_seed, make_pairs, sample_identities
from facexai.data.tensor_datasets import ImageTensorDataset, IndexedPairs, PairTensorDataset
from facexai.data.transforms import build_augmentation

TASKS = ("verification", "classification")


class SyntheticFacesDataModule(pl.LightningDataModule):
    """Seeded synthetic faces with identity-region masks (see :mod:`facexai.data.synthetic`).

    Training yields ``{"image", "label", "mask"}`` for ``num_identities`` identities. Validation
    depends on ``task``: "verification" yields genuine/impostor pairs (``image_a``, ``image_b``,
    ``issame``, ``mask_a``, ``mask_b`` and the pair's position ``index``, see
    :class:`~facexai.data.tensor_datasets.IndexedPairs`) of ``num_val_identities`` *unseen*
    identities, the open-set protocol of face recognition; "classification" yields new images
    of the training identities.

    Args:
        task: "verification" or "classification".
        num_identities: training identities (classes).
        images_per_identity: training images per identity.
        num_val_identities: identities of the validation pairs (verification).
        val_images_per_identity: validation images per identity.
        num_val_pairs: validation pairs (half genuine).
        image_size: side of the square images (112 is the ArcFace convention).
        seed: everything is a deterministic function of the seed.
        batch_size: batch size of every loader.
        num_workers: DataLoader workers.
        augmentation: preset name ("none", "flip", "face") or albumentations dict for training.
    """

    def __init__(
        self,
        task: str = "verification",
        num_identities: int = 64,
        images_per_identity: int = 24,
        num_val_identities: int = 32,
        val_images_per_identity: int = 6,
        num_val_pairs: int = 400,
        image_size: int = 112,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        augmentation: str | dict[str, Any] | None = "none",
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"Unknown task {task!r}. Available: {', '.join(TASKS)}")
        for name, value in [
            ("num_identities", num_identities),
            ("images_per_identity", images_per_identity),
            ("val_images_per_identity", val_images_per_identity),
            ("num_val_pairs", num_val_pairs),
            ("batch_size", batch_size),
        ]:
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if task == "verification" and num_val_identities < 2:
            raise ValueError(f"verification pairs need num_val_identities >= 2, got {num_val_identities}")
        self.save_hyperparameters()
        self.task = task
        self.num_classes = num_identities
        self.val_set_names = ["synthetic"]
        self.augmentation = build_augmentation(augmentation)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Generate the faces once; the loaders call it too, so the module works without a Trainer."""
        self._datasets()

    def _datasets(self) -> tuple[Dataset, Dataset]:
        """(training set, validation set), generated on first use."""
        if self.train_set is None or self.val_set is None:
            self.train_set, self.val_set = self._generate()
        return self.train_set, self.val_set

    def _generate(self) -> tuple[Dataset, Dataset]:
        hp = self.hparams  # saved constructor arguments, read by key: their types are the signature's
        seed, size = hp["seed"], hp["image_size"]
        train_ids = sample_identities(hp["num_identities"], torch.Generator().manual_seed(identity_seed(seed, "ids")))
        labels = torch.arange(hp["num_identities"]).repeat_interleave(hp["images_per_identity"])
        images, masks = generate_faces(labels, train_ids, size, identity_seed(seed, "train"))
        return ImageTensorDataset(images, labels, masks, self.augmentation), self._validation_set(train_ids)

    def _validation_set(self, train_ids: Any) -> Dataset:
        hp = self.hparams
        seed, size = hp["seed"], hp["image_size"]
        if self.task == "classification":
            labels = torch.arange(hp["num_identities"]).repeat_interleave(hp["val_images_per_identity"])
            images, masks = generate_faces(labels, train_ids, size, identity_seed(seed, "val"))
            return ImageTensorDataset(images, labels, masks)
        val_ids = sample_identities(
            hp["num_val_identities"], torch.Generator().manual_seed(identity_seed(seed, "val_ids"))
        )
        labels = torch.arange(hp["num_val_identities"]).repeat_interleave(hp["val_images_per_identity"])
        images, masks = generate_faces(labels, val_ids, size, identity_seed(seed, "val"))
        pairs = make_pairs(labels, hp["num_val_pairs"], torch.Generator().manual_seed(identity_seed(seed, "pairs")))
        return PairTensorDataset(images, *pairs, masks=masks)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return make_loader(dataset, self.hparams["batch_size"], self.hparams["num_workers"], shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training faces with labels and identity-region masks."""
        return self._loader(self._datasets()[0], shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Pairs of unseen identities (verification) or new images of the training identities."""
        val_set = self._datasets()[1]
        return self._loader(IndexedPairs(val_set) if self.task == "verification" else val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """The validation data again: the generator has no separate test split."""
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        """The training faces in order, for explaining or embedding them."""
        return self._loader(self._datasets()[0], shuffle=False)
