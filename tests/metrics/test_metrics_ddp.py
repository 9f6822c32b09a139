"""Two CPU processes (gloo) give the same metric values as one process on the same data."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from facexai.metrics import (
    AverageDrop,
    DeletionAUC,
    PairVerificationMetrics,
    PointingGame,
    Sparsity,
    VerificationDeletionAUC,
)

SPLIT = 13  # rank 0 gets the first 13 samples, rank 1 the other 27: uneven on purpose


def _data() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    issame = (torch.arange(40) % 2).long()
    return {
        "curves": torch.rand(40, 6, generator=gen),
        "scores": torch.rand(40, generator=gen) + 0.1,
        "masked": torch.rand(40, generator=gen),
        "maps": torch.rand(40, 5, 5, generator=gen),
        "masks": torch.rand(40, 5, 5, generator=gen) > 0.5,
        "pair_curves": torch.rand(40, 11, generator=gen) * 0.6 + 0.3 * issame[:, None],
        "pair_scores": torch.randn(40, generator=gen) + issame,
        "issame": issame,
    }


def _evaluate(data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Update every metric in two batches and compute (synced when a process group exists)."""
    metrics = {
        "deletion": DeletionAUC(steps=5),
        "average_drop": AverageDrop(),
        "pointing": PointingGame(),
        "sparsity": Sparsity(),
        "verification": VerificationDeletionAUC(),
        "pairs": PairVerificationMetrics(n_folds=5),
    }
    for part in range(2):
        d = {k: v.tensor_split(2)[part] for k, v in data.items()}
        metrics["deletion"].update(d["curves"])
        metrics["average_drop"].update(d["scores"], d["masked"])
        metrics["pointing"].update(d["maps"], d["masks"])
        metrics["sparsity"].update(d["maps"])
        metrics["verification"].update(d["pair_curves"], d["issame"])
        metrics["pairs"].update(d["pair_scores"], d["issame"])
    out = {name: m.compute() for name, m in metrics.items() if name != "pairs"}
    out.update({f"pairs/{k}": v for k, v in metrics["pairs"].compute().items()})
    out["mean_curve"] = metrics["deletion"].mean_curve()
    out["accuracy_curve"] = metrics["verification"].accuracy_curve()
    return out


def _worker(rank: int, port: int, path: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        data = _data()
        shard = {k: v[:SPLIT] if rank == 0 else v[SPLIT:] for k, v in data.items()}
        result = _evaluate(shard)
        torch.save(result, Path(path) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # ~30 s on two shared cores: each spawned process imports torch
def test_two_process_gloo_matches_single_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    # Single process sees the same samples in the same order as the gathered ranks.
    expected = _evaluate(_data())
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert set(got) == set(expected)
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value, msg=f"rank {rank}, {key}")
