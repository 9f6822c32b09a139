"""The explanation pipeline shared by ``ExplanationCallback`` and ``python -m facexai evaluate``.

One batch goes through the same steps in both: read it (:mod:`~facexai.pipeline.inputs`), pick
its views and targets (:mod:`~facexai.pipeline.views`: classifier, face-pair e+ and e-), make
each view's maps with explainers built from specs (:mod:`~facexai.pipeline.explainers`), and
feed every metric what its class declares (:mod:`~facexai.pipeline.producers`,
:mod:`~facexai.pipeline.suite`), maps with NaN or Inf values left out with a warning. The same
settings therefore give the same numbers in training logs and in ``evaluate`` reports.

>>> from facexai.pipeline import MetricSuite, parse_metric_specs
>>> specs = parse_metric_specs({"deletion_auc": {"steps": 10}}, "evaluate", dataset_level=True)
>>> MetricSuite(specs, mean=[0.5] * 3, std=[0.5] * 3, owner="evaluate").specs
{'deletion_auc': {'steps': 10}}
"""

from facexai.pipeline.explainers import build_explainers, check_layers
from facexai.pipeline.inputs import BatchAdapter, ExplanationInputs, eval_forward, head
from facexai.pipeline.run import clock, explain_and_score, plain_mode, synchronize
from facexai.pipeline.specs import build_metric, feedable_metrics, parse_metric_specs, refusal
from facexai.pipeline.suite import MetricSuite
from facexai.pipeline.views import (
    CLASS_VIEW,
    NEG_VIEW,
    POS_VIEW,
    InvalidMapWarning,
    View,
    ViewSpec,
    invalid_maps,
    make_views,
    view_targets,
)

__all__ = [
    "CLASS_VIEW",
    "NEG_VIEW",
    "POS_VIEW",
    "BatchAdapter",
    "ExplanationInputs",
    "InvalidMapWarning",
    "MetricSuite",
    "View",
    "ViewSpec",
    "build_explainers",
    "build_metric",
    "check_layers",
    "clock",
    "eval_forward",
    "explain_and_score",
    "feedable_metrics",
    "head",
    "invalid_maps",
    "make_views",
    "parse_metric_specs",
    "plain_mode",
    "refusal",
    "synchronize",
    "view_targets",
]
