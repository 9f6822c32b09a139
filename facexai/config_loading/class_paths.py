"""Which classes a config's ``class_path`` may name, checked before import, and building them.

Only modules under :data:`TRUSTED_PACKAGES` are imported (importing a module runs its top-level
code). The top-level ``model`` and ``data`` classes must be LightningModule / LightningDataModule
subclasses; class paths nested in ``init_args`` must be :class:`torch.nn.Module` layers from
:data:`NESTED_PACKAGES`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facexai.config_loading.errors import ConfigError
from facexai.config_loading.yaml_limits import read_config

#: packages whose modules ``class_path`` may import for the top-level model and data
TRUSTED_PACKAGES = ("facexai", "pytorch_lightning", "lightning")
#: packages of the nn.Module classes that nested ``class_path`` values may name
NESTED_PACKAGES = ("facexai", "torch.nn", "timm.layers")
#: packages searched for a bare class name in ``class_path`` (LightningCLI resolves them too)
SHORT_NAME_PACKAGES = ("facexai.models", "facexai.data", "facexai.callbacks", "pytorch_lightning")
SPEC_KEYS = ("class_path", "init_args")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass
class ClassSpec:
    """A checked ``class_path`` + ``init_args``: the class is resolved, nothing is built yet.

    ``init_args`` values may hold further :class:`ClassSpec` (nested class paths), built first.
    """

    cls: type
    init_args: dict[str, Any] = field(default_factory=dict)
    where: str = ""


def lightning_bases() -> dict[str, tuple[type, ...]]:
    """The base class a top-level section's ``class_path`` must extend, by section name."""
    import pytorch_lightning as pl

    return {
        "model": (pl.LightningModule,),
        "data": (pl.LightningDataModule,),
        "trainer.callbacks": (pl.Callback,),
    }


def resolve_class(
    class_path: Any, bases: tuple[type, ...], where: str, packages: Iterable[str] = TRUSTED_PACKAGES
) -> type:
    """The class named by ``class_path`` if it lies in ``packages`` and extends one of ``bases``.

    The module is imported only once its name is known to lie in ``packages``: a class path
    such as ``subprocess.Popen`` or ``some_module.X`` is refused without importing anything.

    Raises:
        ConfigError: not a dotted name, outside ``packages``, not importable, or not a subclass.
    """
    packages = tuple(packages)
    expected = " or ".join(base.__name__ for base in bases)
    if not isinstance(class_path, str) or not _DOTTED.fullmatch(class_path) or "__" in class_path:
        raise ConfigError(
            f"{where}.class_path must be a dotted class name such as "
            f"facexai.models.VerificationModule, got {_short(class_path)}"
        )
    module_names = [class_path.rpartition(".")[0]] if "." in class_path else list(SHORT_NAME_PACKAGES)
    name = class_path.rpartition(".")[2]
    for module_name in module_names:
        if not _inside(module_name, packages):
            raise ConfigError(
                f"{where}.class_path {class_path!r} is refused: only classes from "
                f"{', '.join(packages)} are loaded (a {expected} is expected)"
            )
        found = getattr(_import(module_name), name, None)
        if isinstance(found, type):
            return _checked(found, class_path, bases, where, packages)
    raise ConfigError(f"{where}.class_path {class_path!r} does not name an importable class")


def _inside(module_name: str, packages: tuple[str, ...]) -> bool:
    return any(module_name == package or module_name.startswith(package + ".") for package in packages)


def _import(module_name: str) -> Any:
    """The module, or None where a trusted package has no such module (a typo in the config)."""
    try:
        return importlib.import_module(module_name)
    except ImportError:  # ModuleNotFoundError too: a typo in a trusted package
        return None


def _checked(cls: type, class_path: str, bases: tuple[type, ...], where: str, packages: tuple[str, ...]) -> type:
    """A found class must itself be defined in ``packages`` (not re-exported) and extend ``bases``."""
    expected = " or ".join(base.__name__ for base in bases)
    if not _inside(cls.__module__, packages) or not issubclass(cls, bases):
        raise ConfigError(
            f"{where}.class_path {class_path!r} is refused: it is not a {expected} defined in {', '.join(packages)}"
        )
    return cls


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def parse_spec(spec: Any, where: str, bases: tuple[type, ...] | None = None) -> ClassSpec:
    """Check a ``{class_path, init_args}`` mapping and resolve its classes (nested ones too).

    Args:
        spec: the section as loaded from YAML.
        where: its dotted place in the config, for messages (``model``, ``data.init_args.x``).
        bases: the classes it must extend; default: by section name (:func:`lightning_bases`).

    Raises:
        ConfigError: wrong structure, unknown keys, or a refused class.
    """
    if bases is None:
        known = lightning_bases()
        if where not in known:
            raise ConfigError(f"no class is allowed at {where}; sections with classes: {', '.join(known)}")
        bases = known[where]
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ConfigError(
            f"config section {where!r} must be a mapping with class_path (and init_args), got {_short(spec)}"
        )
    return _spec(spec, where, bases, TRUSTED_PACKAGES)


def _spec(spec: dict, where: str, bases: tuple[type, ...], packages: tuple[str, ...]) -> ClassSpec:
    """A ``{class_path, init_args}`` mapping checked key by key, its class found in ``packages``."""
    unknown = sorted(str(key) for key in spec if key not in SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{where} has unknown keys {unknown}; valid: {', '.join(SPEC_KEYS)}")
    cls = resolve_class(spec["class_path"], bases, where, packages)
    init_args = spec.get("init_args")
    init_args = {} if init_args is None else init_args
    if not isinstance(init_args, dict) or not all(isinstance(key, str) for key in init_args):
        raise ConfigError(f"{where}.init_args must be a mapping of argument names, got {_short(init_args)}")
    args = {key: _nested(value, f"{where}.init_args.{key}") for key, value in init_args.items()}
    return ClassSpec(cls, args, where)


def _nested(value: Any, where: str) -> Any:
    """Values with nested class paths resolved (only nn.Module layers from NESTED_PACKAGES)."""
    if isinstance(value, dict) and "class_path" in value:
        import torch

        return _spec(value, where, (torch.nn.Module,), NESTED_PACKAGES)
    if isinstance(value, dict):
        return {key: _nested(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_nested(item, f"{where}[{index}]") for index, item in enumerate(value)]
    return value


def build(spec: ClassSpec) -> Any:
    """Instantiate a checked spec (nested specs first); constructor argument errors are ConfigErrors."""
    kwargs = {key: _build_value(value) for key, value in spec.init_args.items()}
    try:
        return spec.cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"cannot build {spec.where} ({spec.cls.__name__}) from its init_args: {err}") from err


def _build_value(value: Any) -> Any:
    if isinstance(value, ClassSpec):
        return build(value)
    if isinstance(value, dict):
        return {key: _build_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_build_value(item) for item in value]
    return value


def section_specs(config: Mapping[str, Any], sections: Iterable[str], name: str) -> dict[str, ClassSpec]:
    """Checked specs of the named sections of a loaded config (every one must be present)."""
    specs = {}
    for section in sections:
        if section not in config:
            raise ConfigError(
                f"config {name} has no {section!r} section (class_path + init_args), as a `facexai fit` config has"
            )
        specs[section] = in_config_file(name, parse_spec, config[section], section)
    return specs


def in_config_file(name: str, check: Any, *args: Any) -> Any:
    """``check(*args)`` with its ConfigError prefixed by the config file it is about."""
    try:
        return check(*args)
    except ConfigError as err:
        raise ConfigError(f"config {name}: {err}") from err


def seed_of(config: Mapping[str, Any], name: str) -> int | None:
    """``seed_everything`` as ``fit`` reads it: an int in [0, 2**32), or none (null/true/false)."""
    seed = config.get("seed_everything")
    if seed is None or isinstance(seed, bool):
        return None
    if not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"config {name}: seed_everything must be an integer in [0, 2**32), got {_short(seed)}")
    return seed


def load_config_specs(path: str | Path, sections: Iterable[str] = ("model", "data")) -> dict[str, ClassSpec]:
    """Read ``path`` and check the classes of ``sections``; nothing is imported outside trusted packages.

    This is everything a command does with a config before building objects from it.
    """
    config = read_config(path)
    seed_of(config, str(path))
    return section_specs(config, sections, str(path))
