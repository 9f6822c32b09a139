"""The pair index that facexai's data modules add to validation pairs (issue 14, item 10).

``VerificationModule`` passes ``batch["index"]`` to ``PairVerificationMetrics``, which orders the
gathered pairs by it; these tests check every pair data module supplies it, in dataset order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from facexai.data import FacePairsDataModule, InsightFaceDataModule, SyntheticFacesDataModule, write_verification_bin
from facexai.data.tensor_datasets import IndexedPairs


def _indices(loader: torch.utils.data.DataLoader) -> list[int]:
    return torch.cat([batch["index"] for batch in loader]).tolist()


def test_insightface_bins_carry_the_pair_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(10)]
    path = write_verification_bin(tmp_path / "lfw.bin", images, [True, False, True, False, True])
    dm = InsightFaceDataModule(val_bins=str(path), image_size=16, batch_size=2, num_workers=0)
    (loader,) = dm.val_dataloader()
    assert _indices(loader) == [0, 1, 2, 3, 4]
    assert torch.cat([b["issame"] for b in loader]).tolist() == [True, False, True, False, True]


def test_pairs_files_carry_the_pair_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("x", "y"):
        (tmp_path / name).mkdir()
        for i in (1, 2):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
                tmp_path / name / f"{name}_{i:04d}.jpg"
            )
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("x 1 2\nx 1 y 2\ny 1 2\n")
    dm = FacePairsDataModule(
        pairs_files=str(pairs), pairs_root=str(tmp_path), image_size=16, batch_size=2, num_workers=0
    )
    (loader,) = dm.val_dataloader()
    assert _indices(loader) == [0, 1, 2]


def test_synthetic_verification_pairs_carry_the_index_and_classification_does_not() -> None:
    kwargs = {
        "num_identities": 3,
        "images_per_identity": 2,
        "num_val_identities": 3,
        "val_images_per_identity": 2,
        "num_val_pairs": 7,
        "image_size": 32,
        "batch_size": 3,
    }
    pairs = SyntheticFacesDataModule(**kwargs)
    pairs.setup()
    assert _indices(pairs.val_dataloader()) == list(range(7))
    images = SyntheticFacesDataModule(task="classification", **kwargs)
    images.setup()
    assert "index" not in next(iter(images.val_dataloader()))


class _Items(Dataset):
    def __init__(self, items: list[object]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> object:
        return self.items[i]


def test_indexed_pairs_refuses_items_it_cannot_index() -> None:
    with pytest.raises(TypeError, match="dict items"):
        IndexedPairs(_Items([(1, 2)]))[0]
    with pytest.raises(ValueError, match="already have an 'index'"):
        IndexedPairs(_Items([{"index": 5}]))[0]
    assert IndexedPairs(_Items([{"a": 1}, {"a": 2}]))[1] == {"a": 2, "index": 1}
