"""Metric names for YAML configs: ``create_metric("deletion_auc", steps=20)``.

Metric classes file themselves with :func:`register_metric` in their own module; importing
:mod:`facexai.metrics` imports every such module, so the registry is complete once the package
is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from facexai.metrics.inputs import INPUT_KINDS, DeclaredMetric
from facexai.registry import Registry

METRICS: Registry[DeclaredMetric] = Registry("metric")
M = TypeVar("M", bound=type[DeclaredMetric])


def register_metric(name: str) -> Callable[[M], M]:
    """Class decorator: file a metric class under ``name`` and record the name as its ``key``.

    Raises:
        ValueError: the class declares no known ``inputs`` kind (see :mod:`facexai.metrics.inputs`).
    """

    def wrap(cls: M) -> M:
        if cls.inputs not in INPUT_KINDS:
            raise ValueError(f"metric {name!r} must declare inputs, one of {', '.join(INPUT_KINDS)}")
        cls.key = name
        METRICS.register(name)(cls)
        return cls

    return wrap


def available_metrics() -> list[str]:
    """Sorted names accepted by :func:`create_metric`."""
    return METRICS.names()


def metric_class(name: str) -> type[DeclaredMetric]:
    """The class registered as ``name``; ``ValueError`` listing the valid names if unknown."""
    return METRICS.get(name)


def create_metric(name: str, **kwargs: Any) -> DeclaredMetric:
    """Build the metric registered as ``name`` (case-insensitive) with keyword options.

    >>> create_metric("deletion_auc", steps=20).log_name
    'deletion_auc_steps-20_baseline-zero_score-probability'

    Raises:
        ValueError: unknown name (the message lists the valid ones) or a bad option value.
    """
    return metric_class(name)(**kwargs)
