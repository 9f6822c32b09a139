"""Verification metrics and deletion/insertion curves in numpy, for the torch-free audit.

The definitions follow :mod:`facexai.metrics.verification` and
:mod:`facexai.metrics.functional.perturbation` (ties, interpolation, stable pixel order), so an
audit of an ONNX file reports what the training-time metrics would; tests compare the two.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def roc_auc(scores: np.ndarray, issame: np.ndarray) -> float:
    """Area under the ROC: P(genuine score > impostor score), ties counting one half."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(issame, bool)
    ranks = average_ranks(scores)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, ties sharing their mean rank (Mann-Whitney, Spearman)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    unique, inverse = np.unique(values, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks, minlength=len(unique))
    counts = np.bincount(inverse, minlength=len(unique))
    return (sums / counts)[inverse]


def roc_counts(scores: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False and true accepts and thresholds for "same if score >= t", strictest first.

    The first vertex accepts nothing (threshold just above the top score); then one vertex per
    distinct score, from the highest down.
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(issame, bool)
    unique = np.unique(scores)[::-1]
    index = np.searchsorted(-unique, -scores)  # position of each score in the descending unique
    pos = np.bincount(index, weights=labels, minlength=len(unique))
    neg = np.bincount(index, weights=~labels, minlength=len(unique))
    false_accepts = np.concatenate([[0.0], np.cumsum(neg)])
    true_accepts = np.concatenate([[0.0], np.cumsum(pos)])
    thresholds = np.concatenate([[np.nextafter(unique[0], np.inf)], unique])
    return false_accepts, true_accepts, thresholds


def equal_error_rate(scores: np.ndarray, issame: np.ndarray) -> tuple[float, float]:
    """EER and its threshold, interpolated linearly on the ROC where FNR and FPR cross."""
    false_accepts, true_accepts, thresholds = roc_counts(scores, issame)
    n_neg, n_pos = false_accepts[-1], true_accepts[-1]
    gap = (n_pos - true_accepts) * n_neg - false_accepts * n_pos  # sign of FNR - FPR, exact
    j = int(np.nonzero(gap <= 0)[0][0])
    fpr = false_accepts / n_neg
    if gap[j] == 0:
        return float(fpr[j]), float((thresholds[j] + thresholds[min(j + 1, len(thresholds) - 1)]) / 2)
    t = gap[j - 1] / (gap[j - 1] - gap[j])
    eer = fpr[j - 1] + t * (fpr[j] - fpr[j - 1])
    return float(eer), float(thresholds[j - 1] + t * (thresholds[j] - thresholds[j - 1]))


def best_accuracy(scores: np.ndarray, issame: np.ndarray) -> tuple[float, float]:
    """Highest accuracy over all thresholds and the (lowest) threshold reaching it.

    Candidate cuts are the midpoints between consecutive distinct scores plus -inf and +inf.
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(issame, bool)
    unique, inverse = np.unique(scores, return_inverse=True)
    pos = np.bincount(inverse, weights=labels, minlength=len(unique))
    neg = np.bincount(inverse, weights=~labels, minlength=len(unique))
    true_accepts = np.concatenate([np.cumsum(pos[::-1])[::-1], [0.0]])  # cut k accepts unique[k:]
    true_rejects = np.concatenate([[0.0], np.cumsum(neg)])
    cuts = np.concatenate([[-np.inf], (unique[:-1] + unique[1:]) / 2, [np.inf]])
    best = int(np.argmax(true_accepts + true_rejects))
    return float((true_accepts + true_rejects)[best] / len(scores)), float(cuts[best])


def verification_metrics(scores: np.ndarray, issame: np.ndarray) -> dict[str, float | str | None]:
    """ROC AUC, EER (+ threshold) and best accuracy (+ threshold); None with a reason if undefined."""
    labels = np.asarray(issame, bool)
    n_pos = int(labels.sum())
    result: dict[str, float | str | None] = {"n_pairs": len(labels), "n_genuine": n_pos}
    if n_pos in (0, len(labels)):
        keys = ("roc_auc", "eer", "eer_threshold", "accuracy", "best_threshold")
        reason = f"{n_pos} genuine pairs of {len(labels)}: both genuine and impostor pairs are needed"
        return {**result, **dict.fromkeys(keys), "undefined_reason": reason}
    eer, eer_threshold = equal_error_rate(scores, labels)
    accuracy, threshold = best_accuracy(scores, labels)
    threshold = finite_cut(threshold, scores)
    return {
        **result,
        "roc_auc": roc_auc(scores, labels),
        "eer": eer,
        "eer_threshold": eer_threshold,
        "accuracy": accuracy,
        "best_threshold": threshold,
    }


def finite_cut(cut: float, scores: np.ndarray) -> float:
    """The same decisions with a finite threshold (JSON has no infinities).

    An infinite best cut means "accept all" (-inf) or "reject all" (+inf); the next float
    below the lowest score, or above the highest, decides every pair identically.
    """
    if math.isfinite(cut):
        return cut
    scores = np.asarray(scores, np.float64)
    return float(np.nextafter(scores.min(), -np.inf) if cut < 0 else np.nextafter(scores.max(), np.inf))


def pixel_order(saliency: np.ndarray) -> np.ndarray:
    """Flat pixel indices, most important first (stable: ties by index, as in facexai.metrics)."""
    return np.argsort(-saliency.reshape(-1), kind="stable")


def perturbed_series(image: np.ndarray, saliency: np.ndarray, steps: int, mode: str, baseline: float) -> np.ndarray:
    """(steps + 1, C, H, W): step k perturbs floor(k * HW / steps) most important pixels.

    ``mode="deletion"`` replaces them in ``image`` by ``baseline``; ``"insertion"`` starts from
    an all-``baseline`` image and restores them.
    """
    c, h, w = image.shape
    order = pixel_order(saliency)
    counts = np.arange(steps + 1) * (h * w) // steps
    ranks = np.empty(h * w, np.int64)
    ranks[order] = np.arange(h * w)
    hidden = ranks[None, :] < counts[:, None]  # (steps + 1, HW): pixel already perturbed
    take_base = hidden if mode == "deletion" else ~hidden
    flat = np.where(take_base[:, None, :], np.float32(baseline), image.reshape(1, c, h * w))
    return flat.reshape(steps + 1, c, h, w).astype(np.float32)


def perturbation_curves(
    score_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    images: np.ndarray,
    maps: np.ndarray,
    steps: int = 20,
    baseline: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion curves (N, steps + 1) with a constant baseline.

    Args:
        score_fn: ``(image_batch, sample_index) -> scores`` for images of mixed samples.
        images: graph inputs (N, C, H, W).
        maps: saliency (N, H, W).
        steps: number of equal pixel chunks.
        baseline: the value removed pixels take (0 = the mean colour of normalised inputs).
    """
    curves = {}
    for mode in ("deletion", "insertion"):
        series = [perturbed_series(img, m, steps, mode, baseline) for img, m in zip(images, maps, strict=True)]
        batch = np.concatenate(series)
        index = np.repeat(np.arange(len(images)), steps + 1)
        curves[mode] = np.asarray(score_fn(batch, index), np.float64).reshape(len(images), steps + 1)
    return curves["deletion"], curves["insertion"]


def curve_auc(curves: np.ndarray) -> np.ndarray:
    """Trapezoid area of each curve on the fraction axis [0, 1]."""
    dx = 1.0 / (curves.shape[1] - 1)
    return ((curves[:, 1:] + curves[:, :-1]) * dx / 2).sum(axis=1)
