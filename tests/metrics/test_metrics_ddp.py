"""Two CPU processes (gloo) give the same metric values as one process on the same data."""

from __future__ import annotations

import socket
import time
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
    verification_metrics,
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


# ----------------------------------------------------------------------------- issue 14

N_PAIRS = 41  # odd: DistributedSampler pads 2 ranks to 42 with pair 0 again


def _fold_sensitive_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs whose 10-fold accuracy changes when the folds are cut in another order."""
    gen = torch.Generator().manual_seed(3)
    issame = (torch.rand(N_PAIRS, generator=gen) < 0.5).long()
    return torch.randn(N_PAIRS, generator=gen) + 0.8 * issame, issame


def _shard(rank: int) -> torch.Tensor:
    """This rank's pair indices, as Lightning's DistributedSampler(shuffle=False) gives them."""
    from torch.utils.data import DistributedSampler

    return torch.tensor(list(DistributedSampler(range(N_PAIRS), num_replicas=2, rank=rank, shuffle=False)))


def _uneven_worker(rank: int, port: int, path: str) -> None:
    import warnings
    from datetime import timedelta

    # a collective that waits for a rank that never calls it fails after 30 s instead of hanging
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2, timeout=timedelta(seconds=30)
    )
    try:
        scores, issame = _fold_sensitive_pairs()
        shard = _shard(rank)
        result: dict[str, object] = {}
        indexed, plain = PairVerificationMetrics(), PairVerificationMetrics()
        for part in shard.split(4):
            indexed.update(scores[part], issame[part], index=part)
            plain.update(scores[part], issame[part])
        result["indexed"] = indexed.compute()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result["plain"] = plain.compute()
        result["plain_warnings"] = [str(w.message) for w in caught]
        # rank 1 saw no pair at all: it still takes part in the gather, with empty states
        data = _data()
        pairs, curves = PairVerificationMetrics(n_folds=5), VerificationDeletionAUC()
        if rank == 0:
            pairs.update(data["pair_scores"], data["issame"], index=torch.arange(40))
            curves.update(data["pair_curves"], data["issame"])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The ``compute`` method")
            result["empty_rank_pairs"] = pairs.compute()
            result["empty_rank_curves"] = (curves.compute(), curves.accuracy_curve())
        torch.save(result, Path(path) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # ~30 s on two shared cores: each spawned process imports torch
def test_two_process_gloo_pair_index_and_empty_rank(tmp_path: Path) -> None:
    context = mp.spawn(_uneven_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 240  # start-up included; the gloo timeout (30 s) comes first
    while not context.join(timeout=5):  # False until every process has ended
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the two processes did not finish within 240 s (a collective hangs)")
    scores, issame = _fold_sensitive_pairs()
    expected = verification_metrics(scores, issame, n_folds=10)  # one process, pairs in dataset order
    data = _data()
    curves = VerificationDeletionAUC()
    curves.update(data["pair_curves"], data["issame"])
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        # with the pair index: exactly the single-process numbers, padding dropped
        for key, value in expected.items():
            torch.testing.assert_close(got["indexed"][key], value, rtol=0, atol=0, msg=f"rank {rank}, {key}")
        # without it the folds are cut in gather order (rank 0's pairs, then rank 1's), which
        # changes the accuracy here; rank zero says so
        assert got["plain"]["accuracy"] != expected["accuracy"]
        warned = [m for m in got["plain_warnings"] if "no pair index was given" in m]
        assert len(warned) == (1 if rank == 0 else 0), got["plain_warnings"]
        for key, value in verification_metrics(data["pair_scores"], data["issame"], n_folds=5).items():
            torch.testing.assert_close(got["empty_rank_pairs"][key], value, msg=f"rank {rank}, {key}")
        torch.testing.assert_close(got["empty_rank_curves"][0], curves.compute())
        torch.testing.assert_close(got["empty_rank_curves"][1], curves.accuracy_curve())
