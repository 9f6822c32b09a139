"""DataLoader construction shared by every facexai DataModule."""

from __future__ import annotations

from torch.utils.data import DataLoader, Dataset


def make_loader(dataset: Dataset, batch_size: int, num_workers: int, shuffle: bool) -> DataLoader:
    """A DataLoader whose worker processes persist across epochs (when there are any)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
