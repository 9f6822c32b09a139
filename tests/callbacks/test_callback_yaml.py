"""The callback is configurable from YAML the way LightningCLI reads ``trainer.callbacks``."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
from jsonargparse import ArgumentParser

from facexai.callbacks import ExplanationCallback
from facexai.explain.fame import FAME

YAML = """
callbacks:
  - class_path: facexai.callbacks.ExplanationCallback
    init_args:
      explainers: {explainers}
      metrics: {metrics}
      every_n_epochs: 2
      max_samples: 4
      target_layer: layer4
"""


def _parse(explainers: str, metrics: str) -> ExplanationCallback:
    parser = ArgumentParser()
    parser.add_argument("--callbacks", type=list[pl.Callback])
    config = parser.parse_string(YAML.format(explainers=explainers, metrics=metrics))
    (callback,) = parser.instantiate(config).callbacks
    return callback


def test_dict_of_explainer_options_and_list_of_metrics() -> None:
    callback = _parse("{gradcam: {}, fame: {iterations: 20}}", "[deletion_auc, insertion_auc]")
    assert isinstance(callback, ExplanationCallback)
    assert callback.every_n_epochs == 2
    assert callback.explainers["fame"].iterations == 20
    assert callback.explainers["gradcam"].target_layer == "layer4"
    assert list(callback.suite.specs) == ["deletion_auc", "insertion_auc"]


def test_list_of_names_and_class_paths_and_dict_of_metric_options() -> None:
    explainers = "[liftcam, {class_path: facexai.explain.fame.FAME, init_args: {iterations: 5}}]"
    callback = _parse(explainers, "{deletion_auc: {steps: 10}}")
    assert isinstance(callback.explainers["fame"], FAME)
    assert callback.explainers["fame"].iterations == 5
    assert callback.suite.specs == {"deletion_auc": {"steps": 10}}


def test_yaml_typo_fails_when_the_config_is_instantiated() -> None:
    with pytest.raises(Exception, match="gradkam"):
        _parse("[gradkam]", "[deletion_auc]")
