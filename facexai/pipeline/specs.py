"""Metric specs: names (and options) checked against what the pipeline can feed, and building them.

Whether a metric can be computed follows from its class: the ``inputs`` kind it declares needs
a producer (:mod:`facexai.pipeline.producers`), its ``refusal`` must be empty, and a
``dataset_level`` metric is only fed where the caller explains a whole set (``evaluate``), not
a few samples per epoch (the callback). The score and the Average Drop form follow the view
(:mod:`facexai.pipeline.views`), so they are never options.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from facexai.metrics import DeclaredMetric, available_metrics, create_metric, metric_class
from facexai.pipeline.producers import PAIR_PRODUCERS, VIEW_PRODUCERS
from facexai.pipeline.views import CLASS_VIEW, ViewSpec

MetricSpec = Sequence[str] | Mapping[str, Mapping[str, Any] | None] | None
#: options the pipeline sets per view
VIEW_OPTIONS = ("score", "form")


def refusal(name: str, dataset_level: bool) -> str:
    """Why the pipeline cannot feed metric ``name`` ("" when it can), from the class's declaration.

    Args:
        name: a registered metric name (unknown names raise ``ValueError`` listing the valid ones).
        dataset_level: whether the caller explains whole sets, so dataset-level metrics are fed.
    """
    cls = metric_class(name)
    if cls.refusal:
        return cls.refusal
    if cls.inputs not in VIEW_PRODUCERS and cls.inputs not in PAIR_PRODUCERS:
        return f"no producer makes its inputs ({cls.inputs})"
    if cls.dataset_level and not dataset_level:
        return (
            "it is a dataset-level protocol (its threshold comes from every pair of the set, and only a "
            "few samples are explained per epoch); `python -m facexai evaluate` computes it"
        )
    return ""


def feedable_metrics(dataset_level: bool) -> list[str]:
    """Registered metrics the pipeline can feed, sorted.

    >>> "deletion_auc" in feedable_metrics(False), "randomisation_sanity" in feedable_metrics(True)
    (True, False)
    """
    return [name for name in available_metrics() if not refusal(name, dataset_level)]


def parse_metric_specs(metrics: MetricSpec, owner: str, dataset_level: bool) -> dict[str, dict[str, Any]]:
    """Normalise a list of names or a ``name -> options`` dict and check it fully, now.

    Args:
        metrics: the names, or names with options.
        owner: who asks, for the messages ("ExplanationCallback", "evaluate").
        dataset_level: whether dataset-level metrics are fed (see :func:`refusal`).

    Raises:
        ValueError: unknown or unfeedable metric name (listing the valid ones), bad options.
        TypeError: a value of the wrong type.
    """
    if isinstance(metrics, Mapping):
        specs = {_name(k): _options(k, v) for k, v in metrics.items()}
    elif isinstance(metrics, Sequence) and not isinstance(metrics, str):
        specs = {_name(k): {} for k in metrics}
    else:
        raise TypeError(f"metrics must be a list of names or a dict name -> options, got {metrics!r}")
    for name, options in specs.items():
        reason = refusal(name, dataset_level)
        if reason:
            raise ValueError(
                f"Metric {name!r} cannot be computed by {owner}: {reason}. "
                f"Supported: {', '.join(feedable_metrics(dataset_level))}"
            )
        for option in VIEW_OPTIONS:
            if option in options:
                raise ValueError(
                    f"metric {name!r}: {option!r} is set by {owner} (softmax probability for classifiers, cosine "
                    "for e+, 1 - cosine for e-; the ratio form for probabilities, else the difference form); "
                    "remove it from the options"
                )
        if options.get("baseline") == "custom":
            raise ValueError(f"metric {name!r}: {owner} supports baselines 'zero', 'blur', 'mean', not 'custom'")
        build_metric(name, options, CLASS_VIEW)
    return specs


def _name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"metric names must be strings, got {name!r}")
    return name.lower()


def _options(name: Any, options: Any) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"options of metric {name!r} must be a dict, got {options!r}")
    return dict(options)


def build_metric(name: str, options: Mapping[str, Any], spec: ViewSpec | None) -> DeclaredMetric:
    """Create metric ``name`` with ``options``, plus the view's score and form where it takes them.

    ``spec`` is None for pair-level metrics, which score the pair and take neither.
    """
    params = inspect.signature(metric_class(name).__init__).parameters
    accepted = [p for p in params if p not in ("self", "kwargs", *VIEW_OPTIONS)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"Invalid options {unknown} for metric {name!r}. Accepted: {accepted}")
    view = {} if spec is None else {"score": spec.score, "form": spec.form}
    return create_metric(name, **options, **{key: value for key, value in view.items() if key in params})
