"""DataModules over files on disk: class folders, identity folders + pairs, insightface sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from facexai.data.folders import ImageFileDataset, PairFileDataset, read_pairs, scan_class_folders
from facexai.data.loaders import make_loader
from facexai.data.transforms import build_augmentation


class ImageFolderDataModule(pl.LightningDataModule):
    """Classification from ``root/<class>/<image>`` folders.

    Args:
        train_dir: training folder (one sub-folder per class).
        val_dir: validation folder with the same classes; ``None`` holds out ``val_fraction``.
        image_size: images are resized to this square size.
        val_fraction: share of ``train_dir`` held out when ``val_dir`` is None.
        batch_size: batch size.
        num_workers: DataLoader workers.
        augmentation: preset name or albumentations dict for training images.
        seed: seed of the hold-out split.
    """

    def __init__(
        self,
        train_dir: str,
        val_dir: str | None = None,
        image_size: int = 224,
        val_fraction: float = 0.1,
        batch_size: int = 32,
        num_workers: int = 2,
        augmentation: str | dict[str, Any] | None = "flip",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        self.train_dir, self.val_dir = Path(train_dir), None if val_dir is None else Path(val_dir)
        self.image_size, self.val_fraction, self.seed = image_size, val_fraction, seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.augmentation = build_augmentation(augmentation)
        files, labels, self.class_names = scan_class_folders(self.train_dir)
        self.num_classes = len(self.class_names)
        self._train_files = (files, labels)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        files, labels = self._train_files
        if self.val_dir is None:
            n_val = max(1, int(len(files) * self.val_fraction))
            generator = torch.Generator().manual_seed(self.seed)
            order = torch.randperm(len(files), generator=generator).tolist()
            val_idx, train_idx = order[:n_val], order[n_val:]
            self.train_set = ImageFileDataset([files[i] for i in train_idx], [labels[i] for i in train_idx], self.image_size, self.augmentation)
            self.val_set = ImageFileDataset([files[i] for i in val_idx], [labels[i] for i in val_idx], self.image_size)
            return
        val_files, val_labels, val_classes = scan_class_folders(self.val_dir)
        if val_classes != self.class_names:
            raise ValueError(f"{self.val_dir} has classes {val_classes}, but {self.train_dir} has {self.class_names}")
        self.train_set = ImageFileDataset(files, labels, self.image_size, self.augmentation)
        self.val_set = ImageFileDataset(val_files, val_labels, self.image_size)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return make_loader(self.train_set, self.batch_size, self.num_workers, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return make_loader(self.val_set, self.batch_size, self.num_workers, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()


class FacePairsDataModule(pl.LightningDataModule):
    """Face recognition from identity folders, validated on LFW-style pairs files.

    Args:
        train_dir: ``root/<identity>/<image>`` training folders.
        pairs_files: one or more pairs files (see :func:`facexai.data.folders.read_pairs`); each
            is a verification set logged under its file stem (``val/<stem>/...``).
        pairs_root: folder the pairs' image names are relative to.
        image_size: images are resized to this square size (112 for aligned faces).
        batch_size: batch size.
        num_workers: DataLoader workers.
        augmentation: preset name or albumentations dict for training images.
    """

    def __init__(
        self,
        train_dir: str,
        pairs_files: list[str] | str,
        pairs_root: str,
        image_size: int = 112,
        batch_size: int = 64,
        num_workers: int = 2,
        augmentation: str | dict[str, Any] | None = "face",
    ) -> None:
        super().__init__()
        files, labels, self.class_names = scan_class_folders(train_dir)
        self.num_classes = len(self.class_names)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.train_set = ImageFileDataset(files, labels, image_size, build_augmentation(augmentation))
        paths = [pairs_files] if isinstance(pairs_files, str) else list(pairs_files)
        self.val_sets = [PairFileDataset(read_pairs(p, pairs_root), image_size) for p in paths]
        self.val_set_names = [Path(p).stem for p in paths]

    def train_dataloader(self) -> DataLoader:
        return make_loader(self.train_set, self.batch_size, self.num_workers, shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [make_loader(s, self.batch_size, self.num_workers, shuffle=False) for s in self.val_sets]

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()


class InsightFaceDataModule(pl.LightningDataModule):
    """insightface's formats: ``train.rec``/``train.idx`` for training, ``.bin`` sets to validate.

    Args:
        train_root: folder holding ``train.rec`` and ``train.idx`` (MS1MV2, Glint360K, ...).
        val_bins: verification sets (``lfw.bin``, ``cfp_fp.bin``, ...), each logged under its stem.
        image_size: side of the (already aligned) faces.
        batch_size: batch size.
        num_workers: DataLoader workers.
        augmentation: preset name or albumentations dict for training images.
        skip_corrupt: skip (and count) corrupt records instead of failing.
    """

    def __init__(
        self,
        train_root: str,
        val_bins: list[str] | str,
        image_size: int = 112,
        batch_size: int = 128,
        num_workers: int = 2,
        augmentation: str | dict[str, Any] | None = "flip",
        skip_corrupt: bool = False,
    ) -> None:
        super().__init__()
        from facexai.data.recordio import RecordIODataset
        from facexai.data.verification_bin import VerificationBinDataset

        self.batch_size, self.num_workers = batch_size, num_workers
        self.train_set = RecordIODataset(train_root, transform=build_augmentation(augmentation), skip_corrupt=skip_corrupt)
        self.num_classes = self.train_set.num_classes
        paths = [val_bins] if isinstance(val_bins, str) else list(val_bins)
        self.val_sets = [VerificationBinDataset(p, image_size=image_size) for p in paths]
        self.val_set_names = [Path(p).stem for p in paths]

    def train_dataloader(self) -> DataLoader:
        return make_loader(self.train_set, self.batch_size, self.num_workers, shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [make_loader(s, self.batch_size, self.num_workers, shuffle=False) for s in self.val_sets]

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()


