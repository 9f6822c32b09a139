"""Reading a YAML config within bounds: file size, flow nesting, and nodes after alias expansion.

``yaml.safe_load`` builds plain data only, but a small file can still cost hours (deep flow
nesting makes PyYAML's scanner quadratic) or expand to billions of values (aliases); both are
measured and refused here before anything walks the result.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from facexai.config_loading.errors import ConfigError, one_line

#: config files larger than this are refused before parsing (shipped configs are a few KiB)
MAX_CONFIG_BYTES = 1 << 20
#: nodes (mapping entries, list items, scalars) a loaded config may hold, counting every alias
#: expansion: bounds the work of anything that walks it (alias bombs expand to billions)
MAX_CONFIG_NODES = 100_000
#: nesting depth of a loaded config
MAX_CONFIG_DEPTH = 64
#: quoted scalars and comments, whose brackets do not nest (removed before counting brackets)
_QUOTED_OR_COMMENT = re.compile(r"'[^']*'|\"(?:[^\"\\]|\\.)*\"|(?:^|(?<=\s))#[^\n]*", re.MULTILINE)
_BRACKET = re.compile(r"[\[\]{}]")


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
        raise ConfigError(f"config {name}: invalid YAML: {one_line(str(err))}") from None
    except RecursionError:
        raise ConfigError(f"config {name} is nested too deeply to be a config") from None
    except (ValueError, TypeError, OverflowError) as err:  # a scalar YAML accepts but Python cannot hold
        raise ConfigError(f"config {name}: invalid value: {one_line(str(err))[:200]}") from None


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
    return where + one_line(problem)


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
