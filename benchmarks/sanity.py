"""Sanity of every explainer on a trained face model (issue 3's "what must be shown").

Two checks on validation pairs of the synthetic faces, whose identity lives only inside known
masks (eyes, brows, cheek mark):

1. Localisation: the energy pointing game (share of map mass inside the identity mask) of each
   method's e+ maps, against a uniform random map (whose expected share is the mask's area).
2. Model randomisation (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018): the
   mean Spearman correlation between maps of the trained model and of the same model with its
   top layers (embedding head and the last stage) re-initialised. A method whose maps barely
   change (correlation near 1) is not explaining the model. ``--cascade`` repeats this with the
   cascading randomisation of the same paper: the head, then the head and layer4, then down to
   layer3, layer2, layer1 and finally the stem (every parameter), one row per method and level.
   ``--option fame.blur_kernel=1`` (repeatable) overrides a method's options.

    python -m facexai fit --config configs/demo.yaml
    python benchmarks/sanity.py --config configs/demo.yaml --ckpt_path runs/demo/version_0/checkpoints/*.ckpt
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
from torch import nn

from facexai.evaluate import build_from_config, collect_samples, load_checkpoint, load_config
from facexai.explain import available_explainers, create_explainer, explain_pairs
from facexai.metrics.functional import energy_pointing_game, randomisation_sanity

#: cheaper-than-default options so the whole table runs in minutes on 2 CPU cores
FAST_OPTIONS: dict[str, dict] = {"fame": {"iterations": 50}, "corrrise": {"n_masks": 250}}
TOP_LAYERS = ("layer4", "bn2", "fc", "features")
#: cascading randomisation (Adebayo et al. 2018, Sec. 3): ever more layers from the top
CASCADE = (
    ("head", ("bn2", "fc", "features")),
    ("+layer4", TOP_LAYERS),
    ("+layer3", (*TOP_LAYERS, "layer3")),
    ("+layer2", (*TOP_LAYERS, "layer3", "layer2")),
    ("+layer1", (*TOP_LAYERS, "layer3", "layer2", "layer1")),
    ("all", (*TOP_LAYERS, "layer3", "layer2", "layer1", "conv1", "bn1", "prelu")),
)


def randomise_top(model: nn.Module, names: tuple[str, ...] = TOP_LAYERS, seed: int = 0) -> nn.Module:
    """A copy of ``model`` whose modules under ``names`` get fresh random parameters."""
    clone = copy.deepcopy(model)
    torch.manual_seed(seed)
    found = 0
    for name, module in clone.named_modules():
        if any(name == top or name.startswith(top + ".") for top in names) and hasattr(module, "reset_parameters"):
            module.reset_parameters()
            found += 1
    if not found:
        raise ValueError(f"none of the layers {names} exist in {type(model).__name__}")
    return clone.eval()


def load(config: str, ckpt_path: str | None, pairs: int) -> tuple[nn.Module, dict]:
    """The trained embedding network (eval mode) and ``pairs`` validation pairs with masks."""
    module, datamodule = build_from_config(load_config(config))
    if ckpt_path:
        load_checkpoint(module, ckpt_path)
    return module.explained_model.eval(), collect_samples(datamodule, pairs)


def parse_options(items: list[str]) -> dict[str, dict]:
    """``["fame.blur_kernel=1", ...]`` -> FAST_OPTIONS updated with ``{"fame": {"blur_kernel": 1}}``."""
    options = copy.deepcopy(FAST_OPTIONS)
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, option = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--option expects METHOD.OPTION=VALUE, got {item!r}")
        options.setdefault(method, {})[option] = json.loads(value)
    return options


def cascade(config: str, ckpt_path: str | None, pairs: int, explainers: list[str],
            options: dict[str, dict]) -> list[dict]:  # fmt: skip
    """Spearman of each method's e+ maps against the model randomised from the top down."""
    model, batch = load(config, ckpt_path, pairs)
    rows = []
    for name in explainers:
        explainer = create_explainer(name, **options.get(name, {}))
        maps = torch.cat(explain_pairs(explainer, model, batch["image_a"], batch["image_b"]))
        for level, names in CASCADE:
            randomised = randomise_top(model, names)
            random_maps = torch.cat(explain_pairs(explainer, randomised, batch["image_a"], batch["image_b"]))
            rows.append(
                {
                    "method": name,
                    "options": options.get(name, {}),
                    "randomised": level,
                    "spearman_vs_randomised": float(randomisation_sanity(maps, random_maps)),
                }
            )
            print(f"{name:<12} {level:<9} {rows[-1]['spearman_vs_randomised']:.3f}", flush=True)
    return rows


def run(config: str, ckpt_path: str | None, pairs: int, explainers: list[str],
        options: dict[str, dict]) -> list[dict]:  # fmt: skip
    model, batch = load(config, ckpt_path, pairs)
    randomised = randomise_top(model)
    masks = torch.cat([batch["mask_a"], batch["mask_b"]]).float()
    generator = torch.Generator().manual_seed(0)
    rows = [
        {
            "method": "random map",
            "energy_pointing_game": float(energy_pointing_game(torch.rand(masks.shape, generator=generator), masks)),
        }
    ]
    for name in explainers:
        explainer = create_explainer(name, **options.get(name, {}))
        start = time.perf_counter()
        maps = torch.cat(explain_pairs(explainer, model, batch["image_a"], batch["image_b"]))
        seconds = time.perf_counter() - start
        random_maps = torch.cat(explain_pairs(explainer, randomised, batch["image_a"], batch["image_b"]))
        rows.append(
            {
                "method": name,
                "options": options.get(name, {}),
                "energy_pointing_game": float(energy_pointing_game(maps, masks)),
                "spearman_vs_randomised": float(randomisation_sanity(maps, random_maps)),
                "seconds": seconds,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--ckpt_path")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--explainers", nargs="*", default=available_explainers())
    parser.add_argument(
        "--cascade", action="store_true", help="Spearman against ever deeper randomisation instead of the table"
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="METHOD.OPTION=VALUE",
        help="override a method's option (JSON value), e.g. fame.iterations=100",
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    options = parse_options(args.option)
    if args.cascade:
        rows = cascade(args.config, args.ckpt_path, args.pairs, args.explainers, options)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=2)
        return
    rows = run(args.config, args.ckpt_path, args.pairs, args.explainers, options)
    print(f"{'method':<12} {'EPG (e+)':>9} {'Spearman vs randomised':>23} {'seconds':>8}")
    for row in rows:
        spearman = row.get("spearman_vs_randomised")
        print(
            f"{row['method']:<12} {row['energy_pointing_game']:>9.4f} "
            f"{'' if spearman is None else f'{spearman:.3f}':>23} {row.get('seconds', 0):>8.2f}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
