"""``python -m facexai evaluate``: compare explainers with faithfulness metrics on validation data.

A small package without import cycles (``tests/test_evaluate_package.py`` checks the graph):
:mod:`~facexai.evaluate.settings` (what the numbers depend on, a report row),
:mod:`~facexai.evaluate.inputs` (model and data from a fit config or a face model file),
:mod:`~facexai.evaluate.samples` (the explained samples), :mod:`~facexai.evaluate.run`
(explain and score through :mod:`facexai.pipeline`, the step the training callback shares),
:mod:`~facexai.evaluate.report` and :mod:`~facexai.evaluate.figures` (the outputs) and
:mod:`~facexai.evaluate.cli` (the command line). The names below are re-exported for scripts.

>>> from facexai.evaluate import EvaluationSettings
>>> EvaluationSettings(steps=4).metrics["deletion_auc"]
{'steps': 4}
"""

from facexai.evaluate.cli import build_parser, device_from_arg, evaluate_main, parse_options, settings_from_args
from facexai.evaluate.inputs import (
    build_from_config,
    evaluation_inputs,
    instantiate,
    load_checkpoint,
    load_config,
    resolve_class,
)
from facexai.evaluate.report import write_report
from facexai.evaluate.run import (
    best_explainer,
    build_explainers,
    explainer_maps,
    inverted_maps,
    random_maps,
    run_evaluation,
    score_method,
)
from facexai.evaluate.samples import collect_samples, explanation_chunks
from facexai.evaluate.settings import DEFAULT_METRICS, EvaluationResult, EvaluationSettings

__all__ = [
    "DEFAULT_METRICS",
    "EvaluationResult",
    "EvaluationSettings",
    "best_explainer",
    "build_explainers",
    "build_from_config",
    "build_parser",
    "collect_samples",
    "device_from_arg",
    "evaluate_main",
    "evaluation_inputs",
    "explainer_maps",
    "explanation_chunks",
    "instantiate",
    "inverted_maps",
    "load_checkpoint",
    "load_config",
    "parse_options",
    "random_maps",
    "resolve_class",
    "run_evaluation",
    "score_method",
    "settings_from_args",
    "write_report",
]
