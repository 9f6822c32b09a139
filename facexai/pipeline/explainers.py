"""Building explainers from YAML- and JSON-friendly specs, and checking them against a model.

Explainers are given as names (``["gradcam", "liftcam"]``), as ``label -> options``
(``{"gradcam": {}, "fame": {"iterations": 20}}``; an entry may carry ``method`` to run one
method twice under different labels, e.g. ``{"gradcam_l3": {"method": "gradcam",
"target_layer": "layer3"}}``) or as ready :class:`~facexai.explain.Explainer` instances. The
callback and ``evaluate`` build theirs here, so every error surfaces before any work starts.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from torch import nn

from facexai.explain import EXPLAINERS, Explainer, create_explainer
from facexai.explain.layers import get_layer

#: explainer attributes that name a layer of the explained model
LAYER_OPTIONS = ("target_layer", "explain_at")
ExplainerSpec = Sequence[str | Explainer] | Mapping[str, Mapping[str, Any] | None] | None


@runtime_checkable
class _Layered(Protocol):
    """An explainer with a ``target_layer`` attribute (``None``: found on the first call)."""

    target_layer: str | None


def build_explainers(explainers: ExplainerSpec, target_layer: str | None = None) -> dict[str, Explainer]:
    """Label -> explainer; ``target_layer`` is the default layer of every method that takes one.

    >>> sorted(build_explainers({"cam": {"method": "gradcam"}, "liftcam": {}}))
    ['cam', 'liftcam']

    Raises:
        ValueError: unknown explainer name (listing the available ones), bad options, duplicate labels.
        TypeError: a spec of the wrong type.
    """
    if explainers is None:
        explainers = ["gradcam"]
    items: list[tuple[str, Explainer | tuple[str, dict[str, Any]]]]
    if isinstance(explainers, Mapping):
        items = [(str(label), _method_options(label, options)) for label, options in explainers.items()]
    elif isinstance(explainers, Sequence) and not isinstance(explainers, str):
        items = [(_label(entry), entry if isinstance(entry, Explainer) else (entry, {})) for entry in explainers]
    else:
        raise TypeError(f"explainers must be a list of names/Explainers or a dict name -> options, got {explainers!r}")
    built: dict[str, Explainer] = {}
    for label, spec in items:
        if label in built:
            raise ValueError(f"explainer label {label!r} appears twice; give each entry its own label")
        if isinstance(spec, Explainer):
            built[label] = _with_default_layer(spec, target_layer)
        else:
            built[label] = _create(spec[0], spec[1], target_layer)
    if not built:
        raise ValueError(f"explainers is empty; choose from {', '.join(EXPLAINERS.names())}")
    return built


def _label(entry: Any) -> str:
    if isinstance(entry, Explainer):
        return entry.name or type(entry).__name__.lower()
    if isinstance(entry, str):
        return entry
    raise TypeError(f"explainers entries must be names or Explainer instances, got {entry!r}")


def _method_options(label: Any, options: Any) -> tuple[str, dict[str, Any]]:
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise TypeError(f"options of explainer {label!r} must be a dict, got {options!r}")
    options = dict(options)
    return str(options.pop("method", label)), options


def _create(method: str, options: dict[str, Any], target_layer: str | None) -> Explainer:
    cls = EXPLAINERS.get(method)  # unknown names: ValueError listing the available ones
    params = inspect.signature(cls.__init__).parameters
    if target_layer is not None and "target_layer" in params and "target_layer" not in options:
        options = {**options, "target_layer": target_layer}
    try:
        return create_explainer(method, **options)
    except TypeError as err:
        accepted = [p for p in params if p != "self"]
        raise ValueError(f"Invalid options {options} for explainer {method!r}: {err}. Accepted: {accepted}") from err


def _with_default_layer(explainer: Explainer, target_layer: str | None) -> Explainer:
    """The instance itself, or a copy with ``target_layer`` filled in (the user's object is kept)."""
    if target_layer is None or not isinstance(explainer, _Layered) or explainer.target_layer is not None:
        return explainer
    layered = copy.copy(explainer)
    layered.target_layer = target_layer
    return layered


def check_layers(explainers: Mapping[str, Explainer], model: nn.Module, owner: str = "ExplanationCallback") -> None:
    """Raise ``ValueError`` if an explainer names a layer that ``model`` does not have.

    Run before the first batch (the callback's ``setup``), so a typo in a layer name fails
    before training starts.
    """
    for label, explainer in explainers.items():
        for option in LAYER_OPTIONS:
            name = getattr(explainer, option, None)
            if not isinstance(name, str) or (option == "explain_at" and name == "input"):
                continue
            try:
                get_layer(model, name)
            except ValueError as err:
                raise ValueError(f"{owner}: explainer {label!r} has {option}={name!r}: {err}") from None
