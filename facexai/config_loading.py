"""The one safe loader of training configs and checkpoints, shared by ``evaluate`` and ``export``.

A config or checkpoint may come from anyone (a shared run folder, a downloaded model), so reading
one must never run its author's code:

* YAML is read with ``yaml.safe_load`` (plain data only) from a file of bounded size; the loaded
  structure is walked with a node budget, so alias bombs ("billion laughs") and self-referencing
  aliases are refused instead of exhausting memory in whatever walks them later.
* ``class_path`` values are checked *before* anything is imported: only modules under
  :data:`TRUSTED_PACKAGES` are imported (importing a module runs its top-level code). The
  top-level ``model`` and ``data`` classes must be LightningModule / LightningDataModule
  subclasses; class paths nested in ``init_args`` must be :class:`torch.nn.Module` layers from
  :data:`NESTED_PACKAGES` (facexai's own networks, ``torch.nn``, ``timm.layers``: the classes a
  config legitimately passes as ``act_layer``/``norm_layer``-style arguments). ``subprocess.Popen``
  and friends are refused with a one-line error.
* Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain data, no pickled
  code. A file that is not such a checkpoint is a :class:`CheckpointError`, never a hint to load
  it unsafely.

Every refusal is a :class:`ConfigError` or :class:`CheckpointError` (both ``ValueError``) with a
message naming the file and the problem, so the command line prints one line.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: config files larger than this are refused before parsing (shipped configs are a few KiB)
MAX_CONFIG_BYTES = 1 << 20
#: nodes (mapping entries, list items, scalars) a loaded config may hold, counting every alias
#: expansion: bounds the work of anything that walks it (alias bombs expand to billions)
MAX_CONFIG_NODES = 100_000
#: nesting depth of a loaded config
MAX_CONFIG_DEPTH = 64
#: packages whose modules ``class_path`` may import for the top-level model and data
TRUSTED_PACKAGES = ("facexai", "pytorch_lightning", "lightning")
#: packages of the nn.Module classes that nested ``class_path`` values may name
NESTED_PACKAGES = ("facexai", "torch.nn", "timm.layers")
#: packages searched for a bare class name in ``class_path`` (LightningCLI resolves them too)
SHORT_NAME_PACKAGES = ("facexai.models", "facexai.data", "facexai.callbacks", "pytorch_lightning")
SPEC_KEYS = ("class_path", "init_args")
#: quoted scalars and comments, whose brackets do not nest (removed before counting brackets)
_QUOTED_OR_COMMENT = re.compile(r"'[^']*'|\"(?:[^\"\\]|\\.)*\"|(?:^|(?<=\s))#[^\n]*", re.MULTILINE)
_BRACKET = re.compile(r"[\[\]{}]")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class ConfigError(ValueError):
    """A config file that cannot be used: bad YAML, wrong structure, or a class it may not load."""


class CheckpointError(ValueError):
    """A file that is not a readable facexai/Lightning checkpoint, or whose weights do not fit."""


@dataclass
class ClassSpec:
    """A checked ``class_path`` + ``init_args``: the class is resolved, nothing is built yet.

    ``init_args`` values may hold further :class:`ClassSpec` (nested class paths), built first.
    """

    cls: type
    init_args: dict[str, Any] = field(default_factory=dict)
    where: str = ""


# ----------------------------------------------------------------------------- YAML


def read_config(path: str | Path) -> dict[str, Any]:
    """The YAML mapping in ``path``, read safely and bounded in size, nodes and depth.

    Raises:
        FileNotFoundError: no such file.
        ConfigError: too large, not UTF-8, malformed YAML (file, line and column named), not a
            mapping, or too many nodes / too deep once aliases are expanded.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config not found: {path}")
    data = path.read_bytes()[: MAX_CONFIG_BYTES + 1]
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB; is it a config file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config {path} is not UTF-8 text (byte {err.start})") from err
    config = parse_yaml(text, str(path))
    if not isinstance(config, dict):
        raise ConfigError(f"config {path} must be a YAML mapping (model:, data:, ...), got {type(config).__name__}")
    check_size(config, str(path))
    return config


def parse_yaml(text: str, name: str) -> Any:
    """``yaml.safe_load`` with its errors turned into one-line :class:`ConfigError` naming the line.

    Flow nesting (``[[[[...``) is bounded first: PyYAML's scanner takes time quadratic in it
    (3000 levels: seconds; a 1 MiB file of brackets: hours).
    """
    if flow_depth(text) > MAX_CONFIG_DEPTH:
        raise ConfigError(f"config {name} is nested more than {MAX_CONFIG_DEPTH} levels deep ([ and {{)")
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        raise ConfigError(f"config {name}: {_yaml_problem(err)}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config {name}: invalid YAML: {_one_line(str(err))}") from None
    except RecursionError:
        raise ConfigError(f"config {name} is nested too deeply to be a config") from None
    except (ValueError, TypeError, OverflowError) as err:  # a scalar YAML accepts but Python cannot hold
        raise ConfigError(f"config {name}: invalid value: {_one_line(str(err))[:200]}") from None


def flow_depth(text: str) -> int:
    """The deepest nesting of ``[`` / ``{`` outside quoted scalars and comments (an upper bound)."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_QUOTED_OR_COMMENT.sub("", text)):
        depth = depth + 1 if bracket in "[{" else max(depth - 1, 0)
        deepest = max(deepest, depth)
        if deepest > MAX_CONFIG_DEPTH:
            break
    return deepest


def _yaml_problem(err: yaml.MarkedYAMLError) -> str:
    mark = err.problem_mark or err.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = " ".join(part for part in (err.context, err.problem) if part) or "invalid YAML"
    return where + _one_line(problem)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def check_size(value: Any, name: str) -> None:
    """Refuse a loaded structure over :data:`MAX_CONFIG_NODES` nodes or :data:`MAX_CONFIG_DEPTH` deep.

    Aliases share one Python object per anchor, so ``safe_load`` itself is cheap, but anything
    that walks the result (building, printing, JSON) expands every alias: nine levels of ten
    aliases are 10**9 values. The size is therefore counted with every expansion, yet computed
    once per shared object (memoised by identity), so measuring a bomb costs no more than
    reading it. A structure holding itself (``&a [*a]``) is infinitely deep and refused.
    """
    _Measure(name).size(value, 1)


class _Measure:
    """Expanded node count and height of a loaded YAML structure, memoised per container."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.known: dict[int, tuple[int, int]] = {}  # id -> (expanded nodes, height)

    def size(self, node: Any, depth: int) -> int:
        """Expanded nodes below and including ``node`` at ``depth``; raises past the bounds."""
        if not isinstance(node, (dict, list)):
            return 1
        if id(node) not in self.known:
            self.known[id(node)] = self._measure(node, depth)
        count, height = self.known[id(node)]
        self._check(count, depth + height - 1)
        return count

    def _measure(self, node: dict | list, depth: int) -> tuple[int, int]:
        self._check(1, depth)
        children = [item for pair in node.items() for item in pair] if isinstance(node, dict) else node
        count, height = 1, 1
        for child in children:
            count += self.size(child, depth + 1)
            if isinstance(child, (dict, list)):
                height = max(height, 1 + self.known[id(child)][1])
            self._check(count, depth)
        return count, height

    def _check(self, count: int, depth: int) -> None:
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"config {self.name} is nested more than {MAX_CONFIG_DEPTH} levels deep")
        if count > MAX_CONFIG_NODES:
            raise ConfigError(f"config {self.name} expands to more than {MAX_CONFIG_NODES} values (YAML aliases?)")


# ----------------------------------------------------------------------------- classes


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
        raise ConfigError(f"{where}.class_path must be a dotted class name such as "
                          f"facexai.models.VerificationModule, got {_short(class_path)}")  # fmt: skip
    module_names = [class_path.rpartition(".")[0]] if "." in class_path else list(SHORT_NAME_PACKAGES)
    name = class_path.rpartition(".")[2]
    for module_name in module_names:
        if not _inside(module_name, packages):
            raise ConfigError(f"{where}.class_path {class_path!r} is refused: only classes from "
                              f"{', '.join(packages)} are loaded (a {expected} is expected)")  # fmt: skip
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
        raise ConfigError(f"{where}.class_path {class_path!r} is refused: it is not a {expected} "
                          f"defined in {', '.join(packages)}")  # fmt: skip
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
        raise ConfigError(f"config section {where!r} must be a mapping with class_path (and init_args), "
                          f"got {_short(spec)}")  # fmt: skip
    unknown = sorted(str(key) for key in spec if key not in SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{where} has unknown keys {unknown}; valid: {', '.join(SPEC_KEYS)}")
    cls = resolve_class(spec["class_path"], bases, where)
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

        return _nested_spec(value, where, torch.nn.Module)
    if isinstance(value, dict):
        return {key: _nested(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_nested(item, f"{where}[{index}]") for index, item in enumerate(value)]
    return value


def _nested_spec(value: dict, where: str, base: type) -> ClassSpec:
    unknown = sorted(str(key) for key in value if key not in SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{where} has unknown keys {unknown}; valid: {', '.join(SPEC_KEYS)}")
    cls = resolve_class(value["class_path"], (base,), where, NESTED_PACKAGES)
    init_args = value.get("init_args")
    init_args = {} if init_args is None else init_args
    if not isinstance(init_args, dict) or not all(isinstance(key, str) for key in init_args):
        raise ConfigError(f"{where}.init_args must be a mapping of argument names, got {_short(init_args)}")
    return ClassSpec(cls, {key: _nested(item, f"{where}.init_args.{key}") for key, item in init_args.items()}, where)


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


# ----------------------------------------------------------------------------- configs


def section_specs(config: Mapping[str, Any], sections: Iterable[str], name: str) -> dict[str, ClassSpec]:
    """Checked specs of the named sections of a loaded config (every one must be present)."""
    specs = {}
    for section in sections:
        if section not in config:
            raise ConfigError(f"config {name} has no {section!r} section (class_path + init_args), "
                              "as a `facexai fit` config has")  # fmt: skip
        specs[section] = _in_file(name, parse_spec, config[section], section)
    return specs


def _in_file(name: str, check: Any, *args: Any) -> Any:
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


# ----------------------------------------------------------------------------- checkpoints


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents, read with ``torch.load(weights_only=True)``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a torch file, or one holding pickled objects beyond tensors and plain
            data (which are never unpickled), or not a mapping.
    """
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise CheckpointError(
            f"{path} is not a readable facexai/Lightning checkpoint: torch.load(weights_only=True) refused it "
            "(not a torch file, or it holds objects other than tensors and plain data; no pickled code runs)"
        ) from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} is not a facexai/Lightning checkpoint (it holds a {type(checkpoint).__name__})")
    return checkpoint


def load_weights(module: Any, checkpoint: Mapping[str, Any], path: str | Path) -> None:
    """Load a checkpoint's ``state_dict`` (or a bare state dict) into ``module``."""
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} is not a facexai/Lightning checkpoint (no state_dict)")
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = _one_line(str(err))[:300]
        raise CheckpointError(f"checkpoint {path} does not fit the model built from the config: {first}") from err


def load_module(checkpoint_path: str | Path, config: str | Path | None = None,
                bases: tuple[type, ...] | None = None) -> Any:  # fmt: skip
    """The LightningModule of a checkpoint, in eval mode.

    Without ``config`` the module is rebuilt from the checkpoint's own ``hyper_parameters``; with
    it, from the config's ``model`` section (for checkpoints without hyper-parameters).

    Args:
        checkpoint_path: the ``.ckpt`` file.
        config: optional training YAML.
        bases: classes the config's model must extend (default: any LightningModule).
    """
    from facexai.models.modules import module_from_checkpoint

    checkpoint = read_checkpoint(checkpoint_path)
    if config is None:
        try:
            return module_from_checkpoint(checkpoint, checkpoint_path)
        except ValueError as err:  # says itself what is wrong (no hyper_parameters, bad values)
            raise CheckpointError(_one_line(str(err))) from err
        except (TypeError, RuntimeError) as err:
            reason = _one_line(str(err))[:300]
            raise CheckpointError(f"{checkpoint_path} does not fit a facexai module: {reason}") from err
    config_dict = read_config(config)
    section = config_dict.get("model")
    if section is None:
        raise ConfigError(f"config {config} has no 'model' section (class_path + init_args)")
    module = build(_in_file(str(config), parse_spec, section, "model", bases))
    if "state_dict" not in checkpoint:
        raise CheckpointError(f"{checkpoint_path} is not a Lightning checkpoint (no state_dict)")
    load_weights(module, checkpoint, checkpoint_path)
    return module.eval()
