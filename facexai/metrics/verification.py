"""Face-verification quality from pair similarity scores.

Pair scores are cosine similarities of L2-normalised embeddings; a pair is predicted "same" when
its score is at or above a threshold. Reported numbers follow the face-recognition literature:
ROC AUC, the equal error rate (EER) and its threshold, the true accept rate at a fixed false
accept rate (TAR@FAR), and LFW-style k-fold accuracy (Huang et al., "Labeled Faces in the Wild",
2007: pick the best threshold on k - 1 folds, apply it to the held-out fold).

The ROC points and the AUC come from ``torchmetrics``; the EER, TAR@FAR and the k-fold accuracy
are small tensor computations on top of them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc, binary_roc
from torchmetrics.utilities import rank_zero_warn
from torchmetrics.utilities.data import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

from facexai.metrics._sync import fill_empty_cat_states
from facexai.metrics.inputs import PAIR_SCORES, DeclaredMetric
from facexai.metrics.registry import register_metric

VERIFICATION_KEYS = (
    "roc_auc",
    "eer",
    "eer_threshold",
    "tar@far=1e-3",
    "tar@far=1e-4",
    "accuracy",
    "accuracy_std",
)


def _check_pairs(scores: Tensor, issame: Tensor, n_folds: int | None = None) -> None:
    """Raise ``ValueError`` for pair scores and labels that cannot be evaluated."""
    if scores.dim() != 1 or issame.shape != scores.shape:
        raise ValueError(
            f"scores and issame must both be 1-D with one entry per pair, got shapes "
            f"{tuple(scores.shape)} and {tuple(issame.shape)}"
        )
    if not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or Inf")
    if ((issame != 0) & (issame != 1)).any():
        raise ValueError("issame must hold 0/1 or booleans (1 = genuine pair)")
    n_pos = int(issame.bool().sum())
    if n_pos == 0 or n_pos == len(issame):
        raise ValueError(
            f"verification metrics need both genuine and impostor pairs, got {n_pos} genuine of {len(issame)}"
        )
    if n_folds is not None and not 2 <= n_folds <= len(scores):
        raise ValueError(f"n_folds must lie in [2, {len(scores)}] (the number of pairs), got {n_folds}")


def _dense_ranks(scores: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct scores (ascending) and each score's dense rank scaled to [0, 1] in float64.

    torchmetrics applies a sigmoid to predictions outside [0, 1] (cosines are in [-1, 1]); the
    sigmoid can merge nearby float32 scores into one threshold. Ranks in [0, 1] are left alone
    and keep every distinct score distinct, and the ROC depends on the order only.
    """
    unique, inverse = torch.unique(scores, sorted=True, return_inverse=True)
    return unique, inverse.double() / max(len(unique) - 1, 1)


def _roc_counts(scores: Tensor, issame: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """False and true accepts (float64 integers) and thresholds at each ROC vertex.

    torchmetrics gives the rates; multiplying back by the class sizes recovers exact integer
    counts, so ties such as FPR == FNR are decided exactly rather than by float rounding.
    """
    unique, ranks = _dense_ranks(scores)
    fpr, tpr, rank_thresholds = binary_roc(ranks, issame.long())
    n_pos = issame.sum().double()
    false_accepts = (fpr.double() * (len(issame) - n_pos)).round()
    true_accepts = (tpr.double() * n_pos).round()
    index = (rank_thresholds[1:] * max(len(unique) - 1, 1)).round().long()
    above_max = torch.nextafter(unique[-1:], torch.full_like(unique[-1:], float("inf")))
    return false_accepts, true_accepts, torch.cat([above_max, unique[index]])


def roc_points(scores: Tensor, issame: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """ROC vertices for "same if score >= threshold", from the strictest threshold down.

    Args:
        scores: pair similarities (N,).
        issame: 1 for genuine pairs, 0 for impostors (N,).

    Returns:
        ``(fpr, tpr, thresholds)``, each (U + 1,) for U distinct scores. The first vertex
        (0, 0) accepts nothing; its threshold is the float just above the largest score.
    """
    false_accepts, true_accepts, thresholds = _roc_counts(scores, issame)
    return false_accepts / false_accepts[-1], true_accepts / true_accepts[-1], thresholds


def equal_error_rate(scores: Tensor, issame: Tensor) -> tuple[Tensor, Tensor]:
    """EER and its threshold by linear interpolation on the ROC.

    The false reject rate 1 - TPR falls and the FPR rises along the ROC, so they cross once;
    the crossing is interpolated linearly inside the bracketing segment (the usual
    ``brentq(interp1d(fpr, tpr))`` recipe, in closed form), and so is the threshold. When the
    crossing is exactly a ROC vertex (always so for separable scores), the threshold is the
    midpoint between that vertex's score and the next lower distinct score.

    Returns:
        ``(eer, threshold)`` as 0-d tensors in the scores' dtype.
    """
    false_accepts, true_accepts, thresholds = _roc_counts(scores, issame)
    n_neg, n_pos = false_accepts[-1], true_accepts[-1]
    # sign(FNR - FPR) in exact integers: FN * n_neg - FA * n_pos, non-increasing along the ROC
    gap = (n_pos - true_accepts) * n_neg - false_accepts * n_pos
    j = int(torch.nonzero(gap <= 0)[0, 0])
    if gap[j] == 0:
        # The crossing is vertex j itself, reached by every threshold in (score j+1, score j];
        # the midpoint keeps pairs at the boundary score from flipping under tiny changes.
        eer, threshold = false_accepts[j] / n_neg, (thresholds[j] + thresholds[j + 1]) / 2
    else:
        t = gap[j - 1] / (gap[j - 1] - gap[j])
        fpr = false_accepts / n_neg
        eer = fpr[j - 1] + t * (fpr[j] - fpr[j - 1])
        threshold = thresholds[j - 1] + t.to(thresholds) * (thresholds[j] - thresholds[j - 1])
    return eer.to(scores.dtype), threshold.to(scores.dtype)


def tar_at_far(scores: Tensor, issame: Tensor, far: float) -> Tensor:
    """Largest TPR among ROC vertices whose FPR does not exceed ``far``.

    No interpolation between vertices: the value is reachable with one threshold. With fewer
    than 1 / far impostor pairs this is the TPR at FPR = 0.
    """
    fpr, tpr, _ = roc_points(scores, issame)
    return tpr[fpr <= far].max().to(scores.dtype)


def _best_threshold(scores: Tensor, issame: Tensor) -> Tensor:
    """Threshold with the highest accuracy on these pairs (lowest one among ties).

    Candidate cuts lie between consecutive distinct scores (midpoints), plus -inf (accept all)
    and +inf (reject all); every achievable accuracy is among them.
    """
    unique, inverse = torch.unique(scores, sorted=True, return_inverse=True)
    pos = torch.zeros_like(unique).scatter_add_(0, inverse, issame.to(unique.dtype))
    neg = torch.zeros_like(unique).scatter_add_(0, inverse, 1 - issame.to(unique.dtype))
    zero = unique.new_zeros(1)
    true_accepts = torch.cat([pos.flip(0).cumsum(0).flip(0), zero])  # cut k accepts unique[k:]
    true_rejects = torch.cat([zero, neg.cumsum(0)])
    inf = unique.new_full((1,), float("inf"))
    cuts = torch.cat([-inf, (unique[:-1] + unique[1:]) / 2, inf])
    return cuts[torch.argmax(true_accepts + true_rejects)]


def fold_accuracies(scores: Tensor, issame: Tensor, n_folds: int = 10) -> Tensor:
    """Held-out accuracy per fold, LFW protocol.

    Folds are contiguous in the given order (LFW's pairs file lists its ten folds one after the
    other); the first ``N % n_folds`` folds hold one pair more. For each fold the threshold that
    is best on the other folds is applied to it.

    Returns:
        Accuracies (n_folds,).
    """
    labels = issame.bool()
    sizes = [len(f) for f in torch.arange(len(scores)).tensor_split(n_folds)]
    held_out = torch.repeat_interleave(torch.arange(n_folds), torch.tensor(sizes)).to(scores.device)
    accuracies = []
    for k in range(n_folds):
        test = held_out == k
        threshold = _best_threshold(scores[~test], labels[~test])
        accuracies.append(((scores[test] >= threshold) == labels[test]).to(scores.dtype).mean())
    return torch.stack(accuracies)


def _undefined(issame: Tensor) -> str | None:
    """Why no verification metric is defined for these pairs (only one class), or None."""
    n_pos = int(issame.sum())
    if n_pos == 0 or n_pos == len(issame):
        return f"{n_pos} genuine pairs of {len(issame)} (both classes are needed)"
    return None


def _verification_compute(scores: Tensor, issame: Tensor, n_folds: int, strict: bool = True) -> dict[str, Tensor]:
    """Shared by the function and the Metric class, so the two cannot drift apart.

    With ``strict=False`` (the Metric class) data on which the metrics are undefined -- a
    Lightning sanity check with a handful of pairs of one class, or a diverged model whose
    embeddings hold NaN -- gives NaN and a warning instead of an error, so training does not
    stop on it.
    """
    if not scores.dtype.is_floating_point:
        scores = scores.float()
    issame = issame.long()
    if not strict:
        non_finite = int((~torch.isfinite(scores)).sum())
        if non_finite:
            # Every key depends on every score (ROC order, thresholds, folds): all are NaN.
            rank_zero_warn(
                f"{non_finite} of {len(scores)} pair scores are NaN or Inf; every verification "
                "metric is NaN (the model's embeddings are not finite)"
            )
            return {key: scores.new_tensor(float("nan")) for key in VERIFICATION_KEYS}
    reason = None if strict else _undefined(issame)
    if reason is not None:
        rank_zero_warn(f"verification metrics are undefined for {reason}; returning NaN")
        return {key: scores.new_tensor(float("nan")) for key in VERIFICATION_KEYS}
    too_few = not strict and len(scores) < n_folds
    _check_pairs(scores, issame, None if too_few else n_folds)
    eer, eer_threshold = equal_error_rate(scores, issame)
    if too_few:
        # ROC-based numbers are defined for any two-class set; only the k-fold accuracy is not.
        rank_zero_warn(f"{len(scores)} pairs are fewer than {n_folds} folds; accuracy is NaN")
        accuracies = scores.new_full((1,), float("nan"))
    else:
        accuracies = fold_accuracies(scores, issame, n_folds)
    _, ranks = _dense_ranks(scores)
    return {
        "roc_auc": binary_auroc(ranks, issame).to(scores.dtype),
        "eer": eer,
        "eer_threshold": eer_threshold,
        "tar@far=1e-3": tar_at_far(scores, issame, 1e-3),
        "tar@far=1e-4": tar_at_far(scores, issame, 1e-4),
        "accuracy": accuracies.mean(),
        "accuracy_std": accuracies.std(unbiased=False),
    }


def verification_metrics(scores: Tensor, issame: Tensor, n_folds: int = 10) -> dict[str, Tensor]:
    """Verification quality of pair similarity scores.

    Args:
        scores: similarity per pair (N,), higher meaning "more likely the same identity".
        issame: genuine (1/True) or impostor (0/False) per pair (N,). Both must occur.
        n_folds: folds of the LFW-style accuracy, contiguous in the given order.

    Returns:
        Dict with exactly the keys of ``VERIFICATION_KEYS``: ``roc_auc``; ``eer`` and
        ``eer_threshold`` (linear interpolation on the ROC); ``tar@far=1e-3`` and
        ``tar@far=1e-4`` (best ROC vertex with FPR <= FAR); ``accuracy`` and ``accuracy_std``
        (mean and population standard deviation of the held-out fold accuracies). 0-d tensors
        on the scores' device.

    Raises:
        ValueError: shapes differ, scores are not finite, only one class is present, or
            ``n_folds`` is not in [2, N].
    """
    return _verification_compute(scores, issame, n_folds)


def _distributed(process_group: Any | None = None) -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(process_group) > 1


def _in_index_order(scores: Tensor, issame: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Scores and labels sorted by pair index, each index kept once.

    Under DDP the gathered states arrive rank by rank, each rank holding an interleaved share
    of the pairs, and ``DistributedSampler`` pads the shares to equal length by repeating the
    first pairs. Sorting by index restores the dataset's order (the k-fold accuracy uses
    contiguous folds in that order) and dropping repeated indices removes the padding, so the
    result is the one of a single process. Of repeated indices the first in gather order is
    kept; they are the same pair and, for a deterministic model, the same score.

    Raises:
        ValueError: one index carries both labels, so it does not identify one pair.
    """
    order = torch.argsort(index, stable=True)
    index, scores, issame = index[order], scores[order], issame[order]
    first = torch.ones_like(index, dtype=torch.bool)
    first[1:] = index[1:] != index[:-1]
    group = torch.cumsum(first.long(), 0) - 1
    conflict = issame != issame[first][group]
    if conflict.any():
        bad = int(index[conflict][0])
        raise ValueError(
            f"pair index {bad} was given for both a genuine and an impostor pair; the index must "
            "identify one pair of one verification set (its position in the dataset)"
        )
    return scores[first], issame[first]


@register_metric("pair_verification")
class PairVerificationMetrics(DeclaredMetric):
    """Accumulates pair scores and labels; ``compute()`` returns :func:`verification_metrics`.

    Thresholds (EER, fold thresholds) are dataset-level, so all scores are kept ("cat" states)
    and gathered across processes before computing. Where the metrics are undefined (one class
    only, or a NaN/Inf score) ``compute()`` warns and returns NaN for every key (fewer pairs
    than folds: NaN accuracy) instead of raising, so a Lightning sanity check on two tiny
    batches or a diverged model cannot stop training.

    The k-fold accuracy depends on the pair order (contiguous folds). Pass each pair's position
    in its dataset as ``index`` to ``update`` and ``compute()`` orders the pairs by it and drops
    repeated indices (``DistributedSampler``'s padding), so the result is the same on 1 and N
    processes. Without an index the order is the order of the updates, which under DDP is the
    gather order (rank by rank); ``compute()`` then warns once.

    Args:
        n_folds: folds of the LFW-style accuracy.
    """

    inputs = PAIR_SCORES
    refusal = "it measures the model, not the explanation (VerificationModule logs it)"
    full_state_update = False
    is_differentiable = False
    higher_is_better = None  # a dict: AUC/TAR/accuracy higher, EER lower
    scores: list[Tensor]
    issame: list[Tensor]
    index: list[Tensor]

    def __init__(self, n_folds: int = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(n_folds, int) or n_folds < 2:
            raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")
        self.n_folds = n_folds
        self.settings = {"n_folds": n_folds}
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("issame", default=[], dist_reduce_fx="cat")
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self._warned_order = False

    @property
    def log_name(self) -> str:
        """Name for logging that carries the settings: ``pair_verification_n_folds-10``."""
        return f"{self.key}_n_folds-{self.n_folds}"

    def update(self, scores: Tensor, issame: Tensor, index: Tensor | None = None) -> None:
        """Add pair similarities (N,), genuine/impostor labels (N,) and optionally pair indices (N,).

        ``index`` is each pair's position in its dataset; give it for every batch or for none
        (a mix would leave some pairs without a place in the order).
        """
        if scores.dim() != 1 or issame.shape != scores.shape:
            raise ValueError(
                f"scores and issame must both be 1-D with one entry per pair, got shapes "
                f"{tuple(scores.shape)} and {tuple(issame.shape)}"
            )
        if index is not None and (index.shape != scores.shape or index.dtype.is_floating_point):
            raise ValueError(
                f"index must hold one integer pair index per score ({len(scores)},), got "
                f"{tuple(index.shape)} {index.dtype}"
            )
        if len(self.scores) and (index is not None) != (len(self.index) > 0):
            raise ValueError(
                "give the pair index for every batch or none: some batches had one and this one "
                + ("has" if index is not None else "has not")
            )
        self.scores.append(scores.detach().float())
        self.issame.append(issame.detach().long())
        if index is not None:
            self.index.append(index.detach().long())

    def compute(self) -> dict[str, Tensor]:
        """Verification metrics over every pair seen (on all processes), in pair-index order."""
        scores, issame = dim_zero_cat(self.scores), dim_zero_cat(self.issame)
        index = dim_zero_cat(self.index) if len(self.index) else None
        if index is not None and len(index):
            if len(index) != len(scores):
                raise ValueError(
                    f"{len(index)} pair indices for {len(scores)} scores: some processes gave the "
                    "pair index and others did not"
                )
            scores, issame = _in_index_order(scores, issame, index)
        elif self._to_sync and _distributed(self.process_group) and not self._warned_order:
            self._warned_order = True
            if dist.get_rank(self.process_group) == 0:  # the process group's rank, not an env variable
                warnings.warn(
                    f"{type(self).__name__}: no pair index was given, so the {self.n_folds}-fold accuracy "
                    "uses the gather order (rank by rank, with the sampler's padding), and its folds "
                    "depend on the number of processes; pass update(..., index=pair positions)",
                    UserWarning,
                    stacklevel=2,
                )
        return _verification_compute(scores, issame, self.n_folds, strict=False)

    def _sync_dist(self, dist_sync_fn: Callable = gather_all_tensors, process_group: Any | None = None) -> None:
        """Gather the states; a process that saw no pair sends typed empty states (see fill_empty_cat_states)."""
        empty = torch.empty(0)
        fill_empty_cat_states(self, {"scores": empty.float(), "issame": empty.long(), "index": empty.long()})
        super()._sync_dist(dist_sync_fn, process_group)
