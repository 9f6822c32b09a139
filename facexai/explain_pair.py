"""``python -m facexai explain``: explain one pair of face crops with a pretrained face model.

No YAML: the model file goes through :func:`facexai.models.load_face_model`, the two crops through
the shared image reader, and each explainer gives the e+ maps (what makes the faces match: A
against B's frozen embedding and vice versa) and the e- maps (what pushes them apart). One PNG per
explainer holds both rows, [A | map over A | B | map over B], captioned with the similarity.

Every input is checked and every map computed before the first file is written, so a bad image,
explainer name or model file ends with a one-line error and an untouched output folder.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from tqdm.auto import tqdm

from facexai.face_model_args import add_model_arguments, load_model_from_args, model_input_size

DEFAULT_EXPLAINERS = ("fame", "fgcam", "liftcam")
#: FAME's LOTS descent costs one forward and backward per iteration. The paper runs 500; its maps
#: are stable from about 75-200 iterations (facexai.explain.fame), so a command line answers with
#: 100: inside that range at a fifth of the paper's cost. ``--explainer-options`` overrides it.
FAME_CLI_ITERATIONS = 100
VIEWS = (("similar", "e+ what makes them match"), ("dissimilar", "e- what pushes them apart"))


@dataclass
class PairMaps:
    """The maps of one explainer: ``{mode: (map of A, map of B)}``, each (H, W) in [0, 1]."""

    label: str
    maps: dict[str, tuple[Tensor, Tensor]]


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m facexai explain``."""
    from facexai.explain import available_explainers

    parser = argparse.ArgumentParser(
        prog="python -m facexai explain",
        description="Explain why a face model finds two aligned face crops similar (e+) or dissimilar (e-).",
    )
    parser.add_argument("image_a", help="first aligned face crop (any size; resized to the model's input)")
    parser.add_argument("image_b", help="second aligned face crop")
    add_model_arguments(parser)
    parser.add_argument(
        "--explainers",
        nargs="+",
        default=list(DEFAULT_EXPLAINERS),
        help=f"explainers (default: {' '.join(DEFAULT_EXPLAINERS)}); registered: {', '.join(available_explainers())}",
    )
    parser.add_argument(
        "--explainer-options",
        default="{}",
        help=f'JSON object or file, e.g. {{"fame": {{"iterations": 200}}}} (FAME default here: '
        f"{FAME_CLI_ITERATIONS} iterations)",
    )
    parser.add_argument("--out", default="explanations", help="output folder (default explanations/)")
    parser.add_argument("--tile-size", type=int, default=112, help="side of each picture tile in pixels (default 112)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def explainer_options(text: str, names: Sequence[str]) -> dict[str, Any]:
    """User options with FAME's command-line iteration count filled in where the user set none."""
    from facexai.evaluate.cli import parse_options

    options = parse_options(text)
    for label in names:
        own = options.get(label, {})
        if isinstance(own, Mapping) and own.get("method", label) == "fame":  # other types: build_explainers says
            options[label] = {"iterations": FAME_CLI_ITERATIONS, **own}
    return options


def to_model_input(image: np.ndarray, size: int, path: str | Path) -> Tensor:
    """A decoded crop as a normalised (3, size, size) tensor; other sizes are resized with a warning."""
    from facexai.data.transforms import normalise

    height, width = image.shape[:2]
    if (height, width) != (size, size):
        sys.stderr.write(
            f"facexai: warning: {path} is {width}x{height}, resized to the model's {size}x{size} input; "
            "explanations are only meaningful on aligned crops\n"
        )
        image = np.array(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    return normalise(image)


def cosine_similarity(model: nn.Module, face_a: Tensor, face_b: Tensor) -> float:
    """Cosine of the two clean embeddings, as a verification system scores the pair."""
    from facexai.pipeline import eval_forward

    embeddings = eval_forward(model, torch.stack([face_a, face_b]))
    return float(torch.nn.functional.cosine_similarity(embeddings[:1], embeddings[1:]).item())


def explain_both_views(
    explainer: Any, model: nn.Module, face_a: Tensor, face_b: Tensor
) -> dict[str, tuple[Tensor, Tensor]]:
    """e+ and e- maps of both sides: ``{"similar": (a, b), "dissimilar": (a, b)}`` on the CPU."""
    from facexai.explain import explain_pairs

    maps = {}
    for mode, _ in VIEWS:
        map_a, map_b = explain_pairs(explainer, model, face_a[None], face_b[None], mode=mode)
        maps[mode] = (map_a[0].detach().cpu(), map_b[0].detach().cpu())
    return maps


def render_pair(face_a: Tensor, face_b: Tensor, result: PairMaps, similarity: float, tile_size: int) -> Tensor:
    """The picture of one explainer: an e+ row and an e- row of [A | map A | B | map B]."""
    from facexai.callbacks.overlays import compose_grid, pair_rows
    from facexai.data.transforms import denormalise

    display_a, display_b = denormalise(face_a[None].cpu()), denormalise(face_b[None].cpu())
    rows, captions = [], []
    for mode, caption in VIEWS:
        map_a, map_b = result.maps[mode]
        rows += pair_rows(display_a, display_b, map_a[None], map_b[None])
        captions.append(caption)
    title = f"{result.label}  cosine similarity {similarity:.4f}"
    return compose_grid(rows, captions, tile_size, title)


def output_paths(out: Path, image_a: str, image_b: str, labels: Sequence[str]) -> dict[str, Path]:
    """``<out>/<stem A>_vs_<stem B>_<explainer>.png`` per explainer label."""
    from facexai.evaluate.figures import safe_name

    stem = f"{safe_name(Path(image_a).stem)}_vs_{safe_name(Path(image_b).stem)}"
    return {label: out / f"{stem}_{safe_name(label)}.png" for label in labels}


def explain_all(
    explainers: Mapping[str, Any], model: nn.Module, face_a: Tensor, face_b: Tensor, progress: bool
) -> list[PairMaps]:
    """Every explainer's e+ and e- maps, with a progress bar (FAME takes minutes on a CPU)."""
    bar = tqdm(explainers.items(), desc="explain", disable=not progress, file=sys.stderr)
    return [PairMaps(label, explain_both_views(explainer, model, face_a, face_b)) for label, explainer in bar]


def check_outputs(args: argparse.Namespace, paths: Mapping[str, Path]) -> None:
    """Refuse an ``--out`` that is an input (a crop, the model) or PNGs that would overwrite one."""
    from facexai.writing import refuse_inputs

    inputs = [args.image_a, args.image_b, args.model]
    if not args.explainer_options.lstrip().startswith("{") and Path(args.explainer_options).is_file():
        inputs.append(args.explainer_options)
    for output in (Path(args.out), *paths.values()):
        refuse_inputs(output, inputs, what="--out")


def explain_main(argv: Sequence[str]) -> int:
    """``facexai explain``: check inputs, explain, then write one PNG per explainer."""
    from facexai.callbacks.overlays import save_grid
    from facexai.evaluate.cli import device_from_arg
    from facexai.evaluate.run import build_explainers
    from facexai.files import load_image

    args = build_parser().parse_args(list(argv))
    if args.tile_size < 8:
        raise ValueError(f"--tile-size must be at least 8, got {args.tile_size}")
    explainers = build_explainers(args.explainers, explainer_options(args.explainer_options, args.explainers))
    paths = output_paths(Path(args.out), args.image_a, args.image_b, list(explainers))
    check_outputs(args, paths)
    paths_in = (args.image_a, args.image_b)
    images = [load_image(path) for path in paths_in]  # decoded before the slower model load
    device = torch.device(device_from_arg(args.device))
    model = load_model_from_args(args).to(device).eval()
    size = model_input_size(model)
    face_a, face_b = (
        to_model_input(image, size, path).to(device) for image, path in zip(images, paths_in, strict=False)
    )
    similarity = cosine_similarity(model, face_a, face_b)
    results = explain_all(explainers, model, face_a, face_b, progress=not args.no_progress)
    for result in results:
        save_grid(render_pair(face_a, face_b, result, similarity, args.tile_size), paths[result.label])
    sys.stdout.write(f"similarity {similarity:.4f} (cosine of the embeddings of {args.image_a} and {args.image_b})\n")
    sys.stdout.write("".join(f"wrote {path}\n" for path in paths.values()))
    return 0
