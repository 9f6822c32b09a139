"""Views: which maps one batch gets, what each map is scored by, and maps that cannot be scored.

Single images get one view: the target class scored by its softmax probability (a target
that is not a class is scored as it is). Face pairs get e+ (A explained against B's frozen
embedding and vice versa, scored by their cosine) and e- (scored by 1 - cosine, named
"1-cosine", so that lower deletion / higher insertion AUC is better for both views). The
ratio forms of Average Drop divide by the clean score, which only makes sense for positive
scores: probabilities use the ratio form, every other score the difference form
(``docs/metrics.md``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from facexai.explain import ClassTarget, SimilarityTarget, Target
from facexai.pipeline.inputs import ExplanationInputs


@dataclass(frozen=True)
class ViewSpec:
    """How one view's maps are named and scored.

    Attributes:
        suffix: metric-name suffix: "" (single images), "pos" (e+) or "neg" (e-).
        label: what figures and captions call it: "", "e+" or "e-".
        score: what the metrics score; recorded in their settings.
        softmax: score the softmax probability of the target instead of the raw output.
        form: Average Drop form, "ratio" (probabilities) or "difference" (any other score).
    """

    suffix: str
    label: str
    score: str
    softmax: bool
    form: str


CLASS_VIEW = ViewSpec("", "", "probability", True, "ratio")
TARGET_VIEW = ViewSpec("", "", "target", False, "difference")
POS_VIEW = ViewSpec("pos", "e+", "cosine", False, "difference")
NEG_VIEW = ViewSpec("neg", "e-", "1-cosine", False, "difference")


@dataclass
class View:
    """The maps (N, H, W) of one explainer (or reference) in one view, with their target."""

    spec: ViewSpec
    maps: Tensor
    target: Target

    @property
    def suffix(self) -> str:
        """The view's metric-name suffix ("", "pos" or "neg")."""
        return self.spec.suffix


#: makes the maps of one view: (spec, target) -> maps (N, H, W) of the batch's images
MapMaker = Callable[[ViewSpec, Target], Tensor]


def view_targets(inputs: ExplanationInputs, dissimilar: bool = True) -> list[tuple[ViewSpec, Target]]:
    """The views of one batch: one for single images; e+ and, if ``dissimilar``, e- for face pairs."""
    if not inputs.pairs:
        return [(CLASS_VIEW if isinstance(inputs.target, ClassTarget) else TARGET_VIEW, inputs.target)]
    if not isinstance(inputs.target, SimilarityTarget):
        raise TypeError(f"face pairs need a SimilarityTarget, got {type(inputs.target).__name__}")
    views: list[tuple[ViewSpec, Target]] = [(POS_VIEW, inputs.target)]
    if dissimilar:
        views.append((NEG_VIEW, SimilarityTarget(inputs.target.reference, mode="dissimilar")))
    return views


def make_views(inputs: ExplanationInputs, make_maps: MapMaker, dissimilar: bool = True) -> list[View]:
    """Every view of one batch, its maps made by ``make_maps`` (an explainer, or a reference row)."""
    return [View(spec, make_maps(spec, target), target) for spec, target in view_targets(inputs, dissimilar)]


class InvalidMapWarning(UserWarning):
    """An explainer returned a map with NaN or Inf values; it is left out of the metrics."""


def invalid_maps(maps: Tensor) -> Tensor:
    """(N,) bool: the maps (N, H, W) that have any NaN or Inf value (nothing to score or colour).

    >>> invalid_maps(torch.tensor([[[0.0, 1.0]], [[float("nan"), 0.5]]])).tolist()
    [False, True]
    """
    return ~torch.isfinite(maps.detach()).flatten(1).all(dim=1)


def warn_invalid_maps(owner: str, label: str, view: View, pairs: bool) -> None:
    """Warn, naming the explainer and the samples, when maps have NaN or Inf values.

    Such maps are left out of the metrics (and drawn as crossed grey tiles by the callback), and
    the run goes on; the warning says which explanation to distrust.
    """
    bad = [int(i) for i in torch.nonzero(invalid_maps(view.maps)).flatten()]
    if not bad:
        return
    n = len(view.maps) // 2
    where = [f"pair {i % n} ({'AB'[i // n]})" for i in bad] if pairs else [str(i) for i in bad]
    shown = ", ".join(where[:20]) + (", ..." if len(where) > 20 else "")
    name = f"{label} ({view.suffix})" if view.suffix else label
    warnings.warn(
        f"{owner}: {name} returned maps with NaN or Inf values for samples [{shown}]; "
        "they are drawn as crossed grey tiles and left out of the metrics",
        InvalidMapWarning,
        stacklevel=3,
    )
