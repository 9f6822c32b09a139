"""DataModules over files on disk: class folders, identity folders + pairs, insightface sets.

Training data is optional everywhere: ``validate``, ``test`` and ``evaluate`` of a pretrained
model need only verification data (``.bin`` sets, or pairs files with their image root), and a
user with LFW alone should not have to point ``train_dir`` at a dummy tree. Asking such a module
for its training loader raises an error naming the argument that is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from facexai.data.folders import ImageFileDataset, PairFileDataset, read_pairs, scan_class_folders
from facexai.data.loaders import make_loader
from facexai.data.tensor_datasets import IndexedPairs
from facexai.data.transforms import build_augmentation


def _require(value: Any, owner: str, name: str, what: str) -> Any:
    """``value`` or a ValueError saying which constructor argument is missing and what it holds."""
    if value is None or (isinstance(value, (list, tuple)) and not value):
        raise ValueError(f"{owner} needs {name} ({what})")
    return value


def _no_training_data(owner: str, name: str, what: str) -> ValueError:
    """The error of ``train_dataloader()`` on a module built for evaluation only."""
    return ValueError(
        f"{owner}.train_dataloader(): no training data, {name} was not given ({what}); "
        "a module without it can only validate, test and evaluate"
    )


def _as_list(paths: list[str] | str) -> list[str]:
    return [paths] if isinstance(paths, str) else list(paths)


class ImageFolderDataModule(pl.LightningDataModule):
    """Classification from ``root/<class>/<image>`` folders.

    Args:
        train_dir: training folder (one sub-folder per class); ``None`` for a module that only
            validates on ``val_dir``.
        val_dir: validation folder with the same classes; ``None`` holds out ``val_fraction``
            of ``train_dir``.
        image_size: images are resized to this square size.
        val_fraction: share of ``train_dir`` held out when ``val_dir`` is None.
        batch_size: batch size.
        num_workers: DataLoader workers.
        augmentation: preset name or albumentations dict for training images.
        seed: seed of the hold-out split.
    """

    def __init__(
        self,
        train_dir: str | None = None,
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
        # The class list comes from the training folders when there are any, else from val_dir.
        classes_dir = train_dir if train_dir is not None else val_dir
        if classes_dir is None:
            raise ValueError("ImageFolderDataModule needs train_dir (training folders) or val_dir (validation folders)")
        self.train_dir = None if train_dir is None else Path(train_dir)
        self.val_dir = None if val_dir is None else Path(val_dir)
        self.image_size, self.val_fraction, self.seed = image_size, val_fraction, seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.augmentation = build_augmentation(augmentation)
        files, labels, self.class_names = scan_class_folders(classes_dir)
        self.num_classes = len(self.class_names)
        self._scanned = (files, labels)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets once; the loaders call it too, so the module works without a Trainer."""
        self._validation_set()

    def _validation_set(self) -> Dataset:
        if self.val_set is None:
            self.train_set, self.val_set = self._datasets()
        return self.val_set

    def _datasets(self) -> tuple[Dataset | None, Dataset]:
        """(training set or None, validation set) from the scanned folders."""
        files, labels = self._scanned
        if self.train_dir is None:
            return None, ImageFileDataset(files, labels, self.image_size)
        if self.val_dir is None:
            return self._split_hold_out(files, labels)
        val_files, val_labels, val_classes = scan_class_folders(self.val_dir)
        if val_classes != self.class_names:
            raise ValueError(f"{self.val_dir} has classes {val_classes}, but {self.train_dir} has {self.class_names}")
        return (
            ImageFileDataset(files, labels, self.image_size, self.augmentation),
            ImageFileDataset(val_files, val_labels, self.image_size),
        )

    def _split_hold_out(self, files: list[Path], labels: list[int]) -> tuple[Dataset, Dataset]:
        """Seeded split of the training folders into training and held-out validation images."""
        n_val = max(1, int(len(files) * self.val_fraction))
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(self.seed)).tolist()
        val_idx, train_idx = order[:n_val], order[n_val:]
        train = ImageFileDataset(
            [files[i] for i in train_idx], [labels[i] for i in train_idx], self.image_size, self.augmentation
        )
        return train, ImageFileDataset([files[i] for i in val_idx], [labels[i] for i in val_idx], self.image_size)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training images; an error naming ``train_dir`` if the module has none."""
        self.setup()
        if self.train_set is None:
            raise _no_training_data(type(self).__name__, "train_dir", "root/<class>/<image> folders")
        return make_loader(self.train_set, self.batch_size, self.num_workers, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation images: ``val_dir``, the held-out share of ``train_dir``, or all of ``val_dir`` alone."""
        return make_loader(self._validation_set(), self.batch_size, self.num_workers, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """The validation images again: folders carry no separate test split."""
        return self.val_dataloader()


class _VerificationSetsModule(pl.LightningDataModule):
    """Loaders shared by the face modules: optional training set, one loader per verification set.

    Subclasses fill :attr:`train_set` (or leave it None), :attr:`val_sets` and the argument that
    gives the training data (:attr:`_train_argument`: name and what it holds, for the error).
    """

    _train_argument: tuple[str, str]

    def __init__(self, batch_size: int, num_workers: int) -> None:
        super().__init__()
        self.batch_size, self.num_workers = batch_size, num_workers
        self.train_set: Dataset | None = None
        self.val_sets: list[Dataset] = []
        self.val_set_names: list[str] = []
        self.num_classes: int | None = None

    def train_dataloader(self) -> DataLoader:
        """Shuffled training images; an error naming the missing argument if the module has none."""
        if self.train_set is None:
            raise _no_training_data(type(self).__name__, *self._train_argument)
        return make_loader(self.train_set, self.batch_size, self.num_workers, shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        """One loader per set; items carry their pair ``index`` (k-fold accuracy under DDP)."""
        return [make_loader(IndexedPairs(s), self.batch_size, self.num_workers, shuffle=False) for s in self.val_sets]

    def test_dataloader(self) -> list[DataLoader]:
        """The verification sets again: they are the benchmark, there is no other test split."""
        return self.val_dataloader()


class FacePairsDataModule(_VerificationSetsModule):
    """Face recognition from identity folders, validated on LFW-style pairs files.

    Args:
        train_dir: ``root/<identity>/<image>`` training folders; ``None`` to only validate,
            test or evaluate a pretrained model on the pairs.
        pairs_files: one or more pairs files (see :func:`facexai.data.folders.read_pairs`); each
            is a verification set logged under its file stem (``val/<stem>/...``). Required.
        pairs_root: folder the pairs' image names are relative to. Required.
        image_size: images are resized to this square size (112 for aligned faces).
        batch_size: batch size.
        num_workers: DataLoader workers.
        augmentation: preset name or albumentations dict for training images.
    """

    _train_argument = ("train_dir", "root/<identity>/<image> folders")

    def __init__(
        self,
        train_dir: str | None = None,
        pairs_files: list[str] | str | None = None,
        pairs_root: str | None = None,
        image_size: int = 112,
        batch_size: int = 64,
        num_workers: int = 2,
        augmentation: str | dict[str, Any] | None = "face",
    ) -> None:
        super().__init__(batch_size, num_workers)
        owner = type(self).__name__
        paths = _as_list(_require(pairs_files, owner, "pairs_files", "one or more LFW-style pairs files"))
        root = _require(pairs_root, owner, "pairs_root", "the folder the pairs' image names are relative to")
        self.val_sets = [PairFileDataset(read_pairs(p, root), image_size) for p in paths]
        self.val_set_names = [Path(p).stem for p in paths]
        self.class_names: list[str] = []
        if train_dir is not None:
            files, labels, self.class_names = scan_class_folders(train_dir)
            self.num_classes = len(self.class_names)
            self.train_set = ImageFileDataset(files, labels, image_size, build_augmentation(augmentation))


class InsightFaceDataModule(_VerificationSetsModule):
    """insightface's formats: ``train.rec``/``train.idx`` for training, ``.bin`` sets to validate.

    Args:
        train_root: folder holding ``train.rec`` and ``train.idx`` (MS1MV2, Glint360K, ...);
            ``None`` to only validate, test or evaluate on the ``.bin`` sets.
        val_bins: verification sets (``lfw.bin``, ``cfp_fp.bin``, ...), each logged under its
            stem. Required.
        image_size: side of the (already aligned) faces.
        batch_size: batch size.
        num_workers: DataLoader workers.
        augmentation: preset name or albumentations dict for training images.
        skip_corrupt: skip (and count) corrupt records instead of failing.
    """

    _train_argument = ("train_root", "a folder with train.rec and train.idx")

    def __init__(
        self,
        train_root: str | None = None,
        val_bins: list[str] | str | None = None,
        image_size: int = 112,
        batch_size: int = 128,
        num_workers: int = 2,
        augmentation: str | dict[str, Any] | None = "flip",
        skip_corrupt: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers)
        from facexai.data.verification_bin import VerificationBinDataset

        owner = type(self).__name__
        paths = _as_list(_require(val_bins, owner, "val_bins", "one or more verification .bin files"))
        self.val_sets = [VerificationBinDataset(p, image_size=image_size) for p in paths]
        self.val_set_names = [Path(p).stem for p in paths]
        if train_root is not None:
            from facexai.data.recordio import RecordIODataset

            augment = build_augmentation(augmentation)
            train_set = RecordIODataset(train_root, transform=augment, skip_corrupt=skip_corrupt)
            self.train_set, self.num_classes = train_set, train_set.num_classes
