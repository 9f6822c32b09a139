"""The one name -> class registry: explainers and metrics are built from strings and YAML through it."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps lower-case names to classes; unknown names raise an error listing the valid ones.

    Args:
        kind: what the registry holds, used in error messages ("explainer", "metric").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator that files the class under ``name``."""

        def wrap(cls: type[T]) -> type[T]:
            key = name.lower()
            if key in self._entries and self._entries[key] is not cls:
                raise ValueError(f"{self.kind} name {name!r} is already registered")
            self._entries[key] = cls
            return cls

        return wrap

    def get(self, name: str) -> type[T]:
        """Return the class registered as ``name`` (case-insensitive)."""
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a string, got {type(name).__name__}")
        try:
            return self._entries[name.lower()]
        except KeyError:
            close = difflib.get_close_matches(name.lower(), self.names(), n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"Unknown {self.kind} {name!r}. Available: {', '.join(self.names())}.{hint}") from None

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._entries)
