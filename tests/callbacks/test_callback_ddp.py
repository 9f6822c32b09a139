"""Two CPU processes: images are logged once, metrics are synced across the ranks."""

from __future__ import annotations

import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from callback_models import FAST_METRICS, GridCountingCallback, PlainClassifier, events, trainer, tuple_loaders

from facexai.callbacks import ExplanationCallback
from facexai.pipeline import POS_VIEW, MetricSuite, parse_metric_specs


class _Counting(GridCountingCallback, ExplanationCallback):
    pass


@pytest.mark.slow  # spawns two processes that each import torch and Lightning (~30 s here)
def test_ddp_spawn_logs_images_once_and_syncs_metrics(tmp_path: Path) -> None:
    train, val = tuple_loaders(n_train=12, n_val=6, batch_size=3)  # 2 x 3 training, 3 validation images per rank
    callback = _Counting(
        metrics=FAST_METRICS, target_layer="layer3", max_time_share=None, png_dir=str(tmp_path / "png")
    )
    callback.record_dir = str(tmp_path)
    run = trainer(tmp_path, [callback], strategy="ddp_spawn", devices=2)
    run.fit(PlainClassifier(), train, val)

    acc = events(run.logger.log_dir)
    (image,) = acc.Images("xai/gradcam/heatmaps")
    assert image.height > 3 * 96  # rank zero's 3 rows
    assert len(acc.Images("xai/gradcam/curves")) == 1
    (samples,) = acc.Scalars("val/xai/samples")
    assert samples.value == 6  # 3 per rank, summed by torchmetrics
    assert len(acc.Scalars("val/xai/gradcam/deletion_auc")) == 1
    # times are rank zero's own (a synced log of per-rank labels could pair different all-reduces)
    assert len(acc.Scalars("xai/gradcam/time_s")) == 1
    assert acc.Scalars("xai/time_s")[0].value > 0
    assert [p.name for p in (tmp_path / "png").iterdir()] == ["xai_gradcam_heatmaps.png"]
    # Rendering happens on rank zero only, not merely writing (a TensorBoard logger is silent elsewhere).
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)] == ["1", "0"]


# ----------------------------------------------------------------------------- issue 14: uneven ranks

SPECS = {"deletion_auc": {"steps": 4}, "sparsity": {}}


def _feed(suite: MetricSuite, label: str, name: str, seed: int) -> None:
    """Update one metric of ``suite`` directly with seeded curves or maps (3 samples)."""
    gen = torch.Generator().manual_seed(seed)
    maps = torch.rand(3, 8, 8, generator=gen)
    metric = suite.metric(label, name, POS_VIEW, torch.device("cpu"))
    metric.update(torch.rand(3, 5, generator=gen) if name == "deletion_auc" else maps)


#: (rank, explainer, metric, seed): rank 1 creates its metrics in another order and has one
#: explainer rank 0 never ran; only rank 0 counts samples. Epoch 2: rank 1 explains nothing.
EPOCH_1 = [
    (0, "gradcam", "deletion_auc", 1),
    (0, "gradcam", "sparsity", 2),
    (1, "fame", "deletion_auc", 3),
    (1, "gradcam", "sparsity", 4),
]
EPOCH_2 = [(0, "gradcam", "sparsity", 5)]


def _uneven_epochs(rank: int | None) -> list[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
    """compute() and mean_curves() after each epoch; ``rank`` None: one process does everything."""
    specs = parse_metric_specs(SPECS, "ExplanationCallback", dataset_level=False)
    suite, results = MetricSuite(specs, [0.5] * 3, [0.5] * 3), []
    for epoch in (EPOCH_1, EPOCH_2):
        for owner, label, name, seed in epoch:
            if rank is None or rank == owner:
                _feed(suite, label, name, seed)
        if rank in (None, 0):
            suite.count(3, torch.device("cpu"))
        results.append((suite.compute(), suite.mean_curves()))
        suite.reset()
    return results


def _uneven_worker(rank: int, port: int, path: str) -> None:
    # a collective that waits for a rank that never calls it fails after 30 s instead of hanging
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2, timeout=timedelta(seconds=30)
    )
    try:
        torch.save(_uneven_epochs(rank), Path(path) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes importing torch (~30 s here)
def test_metric_suite_ranks_with_uneven_updates_agree(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.spawn(_uneven_worker, args=(port, str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 240
    while not context.join(timeout=5):  # False until every process has ended
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the two processes did not finish within 240 s (a collective hangs)")
    expected = _uneven_epochs(None)
    # keys in rank order of first appearance: rank 0's, then the one only rank 1 had
    assert list(expected[0][0]) == [
        "gradcam/deletion_auc_pos",
        "gradcam/sparsity_pos",
        "fame/deletion_auc_pos",
        "samples",
    ]
    assert list(expected[1][0]) == ["gradcam/sparsity_pos", "samples"]
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        for epoch, ((values, curves), (want_values, want_curves)) in enumerate(zip(got, expected, strict=True)):
            assert list(values) == list(want_values), f"rank {rank}, epoch {epoch}"
            torch.testing.assert_close(values, want_values, msg=f"rank {rank}, epoch {epoch}")
            torch.testing.assert_close(curves, want_curves, msg=f"rank {rank}, epoch {epoch}")
