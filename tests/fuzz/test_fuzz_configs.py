"""Fuzzing the config loader of ``evaluate`` and ``export`` (facexai.config_loading).

Seeded mutations of a valid config (byte-level text mutations, and structured ones: wrong types
for class_path/init_args, unknown keys, deep nesting, huge numbers, alias bombs, non-mapping
documents) go through exactly what the commands do with a config before building anything:
``load_config_specs`` for evaluate (model + data) and the model section of export. Each case must
load or raise :class:`ConfigError` with a message; never another exception, a hang, or memory
beyond a bound. Class paths are never built here (a valid spec may name a big model).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import yaml
from fuzz_cases import DEFAULT_CASES, SLOW_CASES, check_reader, text_mutations

from facexai.config_loading import ConfigError, load_config_specs, parse_spec, read_config

EVALUATE_CONFIG = """\
seed_everything: 0
trainer:
  max_epochs: 1
  callbacks:
    - class_path: pytorch_lightning.callbacks.ModelCheckpoint
      init_args: {monitor: val/roc_auc}
model:
  class_path: facexai.models.VerificationModule
  init_args:
    backbone: iresnet_mini
    num_identities: 4
    embedding_size: 16
    margin: arcface
    backbone_kwargs:
      img_size: 32
      act: {class_path: torch.nn.ReLU, init_args: {inplace: true}}
data:
  class_path: SyntheticFacesDataModule
  init_args:
    task: verification
    num_identities: 4
    image_size: 32
    batch_size: 4
"""

#: Python allocations while loading one case: the config is a few KiB, its objects a few MiB at most
MEMORY_BOUND = 64 << 20
SECONDS = 5.0


def load_for_evaluate(path: Path) -> object:
    """What ``evaluate --config`` checks before building: both sections and their classes."""
    return load_config_specs(path, ("model", "data"))


def load_for_export(path: Path) -> object:
    """What ``export --config`` checks before building: the model section, facexai modules only."""
    from facexai.models import ClassifierModule, VerificationModule

    return parse_spec(read_config(path).get("model"), "model", (ClassifierModule, VerificationModule))


LOADERS: dict[str, Callable[[Path], object]] = {"evaluate": load_for_evaluate, "export": load_for_export}


# ----------------------------------------------------------------------------- structured cases


def _odd_value(rng: random.Random) -> object:
    """A value of the wrong type or size for wherever it lands."""
    return rng.choice(
        [
            None,
            0,
            -1,
            10**30,
            1e308,
            float("inf"),
            True,
            "",
            "x" * 1000,
            [],
            {},
            [1, [2, [3]]],
            {"class_path": None},
            {"class_path": "subprocess.Popen", "init_args": {"args": ["true"]}},
            {"class_path": "facexai.models.VerificationModule", "init_args": "no"},
            "builtins.eval",
            "facexai.models.__class__",
            "os.system",
            "facexai..models",
            ".VerificationModule",
            "torch.nn.ReLU",
        ]
    )


def _mutate_tree(config: dict, rng: random.Random) -> dict:
    """Put an odd value (or an unknown key) at a random place of the loaded valid config."""
    places: list[tuple[dict, str]] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                places.append((node, key))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(config)
    node, key = rng.choice(places)
    if rng.random() < 0.2:
        node[f"unknown_{rng.randrange(100)}"] = _odd_value(rng)
    else:
        node[key] = _odd_value(rng)
    return config


def _alias_bomb(rng: random.Random) -> str:
    width, depth = rng.randint(2, 12), rng.randint(3, 12)
    lines = ['l0: &l0 ["lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, depth)]
    target = rng.choice(["model", "data", "trainer"])
    return "\n".join(lines) + f"\n{target}: *l{depth - 1}\nmodel: {{class_path: VerificationModule}}\n"


def _deep(rng: random.Random) -> str:
    depth = rng.choice([50, 70, 500, 3000, 20000])
    if rng.random() < 0.5:
        return "model: " + "[" * depth + "]" * depth + "\n"
    return "model: " + "{a: " * depth + "1" + "}" * depth + "\n"


def _huge_number(rng: random.Random) -> str:
    # 4301 decimal digits pass YAML's int pattern but exceed Python's int-from-string limit
    number = rng.choice(["9" * 4301, "-" + "9" * 4301, "1e99999", "0x" + "f" * 1200, ".inf", "0b" + "1" * 5000])
    return EVALUATE_CONFIG.replace("num_identities: 4", f"num_identities: {number}", 1)


def _non_mapping(rng: random.Random) -> str:
    return rng.choice(
        [
            "",
            "~",
            "- model\n- data\n",
            "42",
            "'model'",
            "!!binary aGVsbG8=",
            "--- a\n--- b\n",
            "model: !!python/object/apply:os.system ['true']\n",
            "? [a, b]\n: c\n",
            "2001-13-45: x\n",
            "seed_everything: 2001-13-45\nmodel: {}\ndata: {}\n",
            "a: &x 1\n<<: *x\n",
            "<<: [1, 2]\n",
            "\x00\x01model: 1",
            "\ufeffmodel: {}\n",
        ]
    )


def structured_cases(cases: int, seed: int) -> Iterator[tuple[str, str]]:
    """``(label, yaml text)``: wrong types, unknown keys, deep nesting, huge numbers, alias bombs."""
    rng = random.Random(seed)
    makers: dict[str, Callable[[random.Random], str]] = {
        "tree": lambda r: yaml.safe_dump(_mutate_tree(yaml.safe_load(EVALUATE_CONFIG), r)),
        "alias_bomb": _alias_bomb,
        "deep": _deep,
        "huge_number": _huge_number,
        "non_mapping": _non_mapping,
    }
    names = sorted(makers)
    for case in range(cases):
        name = names[case % len(names)]
        yield f"case {case} ({name}, seed {seed})", makers[name](rng)


# ----------------------------------------------------------------------------- the property


def run_cases(tmp_path: Path, cases: Iterator[tuple[str, str]]) -> dict[str, int]:
    """Feed every case to both loaders; returns how many loaded and how many were refused."""
    path = tmp_path / "config.yaml"
    path.write_text(EVALUATE_CONFIG)
    for load in LOADERS.values():  # imports happen once, outside the measured cases
        load(path)
    counts = {"ok": 0, "refused": 0}
    for label, text in cases:
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        for command, load in LOADERS.items():
            outcome = check_reader(
                partial(load, path), ConfigError, f"{command} {label}", memory_bound=MEMORY_BOUND, seconds=SECONDS
            )
            counts[outcome] += 1
    return counts


def test_valid_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(EVALUATE_CONFIG)
    specs = load_for_evaluate(path)
    assert specs["model"].init_args["backbone_kwargs"]["act"].cls.__name__ == "ReLU"
    assert load_for_export(path).cls.__name__ == "VerificationModule"


def test_fuzz_config_text(tmp_path: Path) -> None:
    counts = run_cases(tmp_path, text_mutations(EVALUATE_CONFIG, DEFAULT_CASES // 2, seed=1))
    assert counts["ok"] > 0, counts
    assert counts["refused"] > 0, counts


def test_fuzz_config_structure(tmp_path: Path) -> None:
    counts = run_cases(tmp_path, structured_cases(DEFAULT_CASES // 2, seed=2))
    assert counts["refused"] > 0, counts


@pytest.mark.slow
def test_fuzz_config_text_slow(tmp_path: Path) -> None:
    counts = run_cases(tmp_path, text_mutations(EVALUATE_CONFIG, SLOW_CASES, seed=101))
    assert counts["ok"] > 0, counts
    assert counts["refused"] > 0, counts


@pytest.mark.slow
def test_fuzz_config_structure_slow(tmp_path: Path) -> None:
    counts = run_cases(tmp_path, structured_cases(SLOW_CASES, seed=102))
    assert counts["refused"] > 0, counts
