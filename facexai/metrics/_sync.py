"""Helpers for gathering metric states across processes (kept free of facexai imports)."""

from __future__ import annotations

from torch import Tensor
from torchmetrics import Metric


def fill_empty_cat_states(metric: Metric, empties: dict[str, Tensor]) -> None:
    """Give each "cat" state that holds no batch yet an empty tensor of its real dtype and shape.

    Called by a metric's ``_sync_dist`` before torchmetrics gathers. A process whose share of
    the data was empty (uneven samplers, a set seen by some ranks only) still has to take part
    in the gather; torchmetrics would send its empty list as a 1-D float32 tensor, but
    ``all_gather`` needs the dtype and the number of dimensions the other processes send
    (int64 labels, (M, steps + 1) curves), so the gather would fail or hang instead of adding
    nothing. ``empties`` maps state names to tensors with a zero-length first dimension.
    """
    for name, empty in empties.items():
        state = getattr(metric, name)
        if isinstance(state, list) and not state:
            setattr(metric, name, [empty.to(metric.device)])
