"""The explainer registry instance, separate from ``__init__`` so method files can import it."""

from __future__ import annotations

from collections.abc import Callable

from facexai.explain.base import Explainer
from facexai.registry import Registry

EXPLAINERS: Registry[Explainer] = Registry("explainer")


def register_explainer(name: str) -> Callable[[type[Explainer]], type[Explainer]]:
    """Class decorator: file an Explainer subclass under ``name`` and record it on the class."""

    def wrap(cls: type[Explainer]) -> type[Explainer]:
        cls.name = name
        return EXPLAINERS.register(name)(cls)

    return wrap


def create_explainer(name: str, **options: object) -> Explainer:
    """Build the explainer registered as ``name`` with keyword ``options`` (see docs/methods.md)."""
    return EXPLAINERS.get(name)(**options)


def available_explainers() -> list[str]:
    """Names accepted by :func:`create_explainer`, sorted."""
    return EXPLAINERS.names()


def exportable_explainers() -> list[str]:
    """Names of the registered explainers whose class can be traced into ONNX, sorted.

    Read from each class's :attr:`~facexai.explain.Explainer.not_exportable`, so a newly
    registered method is listed (or not) by its own declaration.

    >>> import facexai.explain
    >>> exportable_explainers()
    ['fgcam', 'gradcam', 'gradcam++', 'liftcam']
    """
    return [name for name in EXPLAINERS.names() if EXPLAINERS.get(name).not_exportable is None]
