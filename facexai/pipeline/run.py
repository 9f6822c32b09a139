"""Explaining one batch and scoring it: the step the callback and ``evaluate`` share.

:func:`explain_and_score` makes the maps of every view (an explainer, or a reference such as
random maps) and feeds them to a :class:`~facexai.pipeline.suite.MetricSuite`, with the network
taking float32 inputs whatever its precision, so a bf16 run and ``evaluate`` score the same
images. :func:`plain_mode` keeps metric states ordinary tensors under Lightning's inference
mode; :func:`synchronize` makes wall-clock times of CUDA work honest.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from facexai.explain.base import float32_interface
from facexai.pipeline.inputs import ExplanationInputs
from facexai.pipeline.suite import MetricSuite
from facexai.pipeline.views import MapMaker, View, make_views


def explain_and_score(
    suite: MetricSuite,
    label: str,
    make_maps: MapMaker,
    inputs: ExplanationInputs,
    model: nn.Module,
    dissimilar: bool = True,
) -> list[View]:
    """The views of one batch, made by ``make_maps`` and scored by every metric of ``suite``.

    Args:
        suite: the metrics to feed.
        label: the explainer's (or reference row's) label in the metric keys.
        make_maps: ``(view spec, target) -> maps`` of ``inputs.images``.
        inputs: the batch, as read by :class:`~facexai.pipeline.inputs.BatchAdapter`.
        model: the explained network (the metrics score perturbed images with it).
        dissimilar: for face pairs also make and score e- maps.
    """
    with float32_interface(model):
        views = make_views(inputs, make_maps, dissimilar)
        suite.update(label, views, inputs, model)
    return views


@contextmanager
def plain_mode(device_type: str) -> Iterator[None]:
    """No inference mode, no gradients, no autocast: normal float32 tensors for the metric states.

    Under ``trainer.validate`` tensors made in inference mode could never be updated in place
    again by a later ``fit``; scoring under autocast would make faithfulness depend on precision.
    """
    with torch.inference_mode(False), torch.no_grad(), torch.autocast(device_type, enabled=False):
        yield


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so timings measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    """``time.perf_counter()`` once ``device`` has finished its queued work."""
    synchronize(device)
    return time.perf_counter()
