"""``python -m facexai evaluate``: compare explainers with faithfulness metrics on validation data.

The model and data come from the YAML of a ``fit`` run (``--config``) or from a pretrained face
model file with verification data only (``--model`` with ``--bin`` or ``--pairs``); see
:mod:`facexai.evaluate.inputs`. Every input is checked before anything is loaded;
:mod:`facexai.evaluate.run` explains and scores, :mod:`facexai.evaluate.report` writes
``results.md``, ``results.csv``, ``results.json``, curve PNGs, galleries and ``index.html``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from facexai.evaluate.figures import GALLERY_VIEWS, safe_name
from facexai.evaluate.inputs import evaluation_inputs
from facexai.evaluate.report import write_report
from facexai.evaluate.run import build_explainers, run_evaluation
from facexai.evaluate.samples import collect_samples, gallery_inputs
from facexai.evaluate.settings import INVERTED_PREFIX, RANDOM_ROW, EvaluationSettings
from facexai.explain import available_explainers


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m facexai evaluate``."""
    from facexai.face_model_args import add_model_arguments

    parser = argparse.ArgumentParser(
        prog="python -m facexai evaluate",
        description="Compare explainers with faithfulness and localisation metrics on validation data: "
        "a fit run's model (--config [--ckpt_path]) or a pretrained face model file (--model with --bin "
        "or --pairs/--images-root, no YAML).",
    )
    parser.add_argument("--config", help="the YAML of the fit run (model: and data: sections)")
    parser.add_argument("--ckpt_path", "--ckpt-path", dest="ckpt_path", help="Lightning checkpoint to load (--config)")
    add_model_arguments(parser, required=False)
    data = parser.add_argument_group("verification data (with --model)")
    data.add_argument("--bin", nargs="+", default=None, help="insightface verification sets (lfw.bin ...)")
    data.add_argument("--pairs", nargs="+", default=None, help="LFW-style pairs files")
    data.add_argument("--images-root", default=None, help="folder the pairs' image names are relative to")
    registered = ", ".join(available_explainers())
    parser.add_argument("--explainers", nargs="+", required=True, help=f"labels; registered: {registered}")
    parser.add_argument(
        "--explainer-options",
        default="{}",
        help='JSON object or file: {"fame": {"iterations": 50}}; "method" runs a method under another label',
    )
    parser.add_argument("--max-samples", type=int, default=64, help="validation samples (images, or pairs) to explain")
    parser.add_argument("--steps", type=int, default=50, help="deletion/insertion steps (default 50)")
    parser.add_argument("--verification-steps", type=int, default=10, help="verification-accuracy steps")
    parser.add_argument("--batch-size", type=int, default=16, help="samples per explainer call")
    parser.add_argument("--out", default="eval", help="output folder (default eval/)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random-map baseline")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def parse_options(text: str) -> dict[str, Any]:
    """``--explainer-options``: a JSON object, inline or in a file."""
    path = Path(text)
    if not text.lstrip().startswith("{") and path.is_file():
        text = path.read_text(encoding="utf-8")
    try:
        options = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--explainer-options is not valid JSON: {err}") from err
    if not isinstance(options, dict):  # a user's file: ValueError is what the CLI reports in one line
        raise ValueError(f"--explainer-options must be a JSON object name -> options, got {options!r}")  # noqa: TRY004
    return options


def device_from_arg(device: str | None) -> str:
    """``--device``, defaulting to CUDA when present; asking for absent CUDA is a user error."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but CUDA is not available")
    return device


def settings_from_args(args: argparse.Namespace) -> EvaluationSettings:
    """Validated :class:`EvaluationSettings` from the parsed arguments."""
    for name in ("max_samples", "steps", "verification_steps", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    device = device_from_arg(args.device)
    return EvaluationSettings(
        args.steps, args.verification_steps, args.batch_size, args.max_samples, args.seed, device=device
    )


def input_paths(args: argparse.Namespace) -> list[str]:
    """Every file or folder ``evaluate`` reads: config, checkpoint, model, data, options file."""
    paths = [args.config, args.ckpt_path, args.model, args.images_root, *(args.bin or []), *(args.pairs or [])]
    if not args.explainer_options.lstrip().startswith("{") and Path(args.explainer_options).is_file():
        paths.append(args.explainer_options)
    return [path for path in paths if path]


def report_files(out: Path, labels: Sequence[str]) -> list[Path]:
    """Every file the report may write into ``out`` (the inverted row may follow any explainer)."""
    rows = [*labels, RANDOM_ROW, *(f"{INVERTED_PREFIX} {label}" for label in labels)]
    fixed = ["results.md", "results.csv", "results.json", "curves_overlay.png", "index.html"]
    names = fixed + [name for name, _ in GALLERY_VIEWS.values()] + [f"curves_{safe_name(r)}.png" for r in rows]
    return [out / name for name in names]


def check_output_folder(args: argparse.Namespace) -> None:
    """Refuse an ``--out`` that is an input, lies inside an input folder, or would overwrite an input file.

    Checked before anything is loaded, so a slip such as ``--out`` = the image root costs nothing.
    """
    from facexai.writing import refuse_inputs

    inputs = input_paths(args)
    out = Path(args.out)
    refuse_inputs(out, inputs, what="--out")
    for path in report_files(out, args.explainers):
        refuse_inputs(path, inputs, what="--out")


def evaluate_main(argv: Sequence[str]) -> int:
    """``facexai evaluate``: explain, score and write the report; returns the exit code."""
    args = build_parser().parse_args(list(argv))
    check_output_folder(args)
    explainers = build_explainers(args.explainers, parse_options(args.explainer_options))
    settings = settings_from_args(args)
    inputs = evaluation_inputs(args, settings.batch_size)
    batch = collect_samples(inputs.datamodule, settings.max_samples)
    results = run_evaluation(inputs.module, batch, explainers, settings, progress=not args.no_progress)
    gallery = gallery_inputs(inputs.module, batch, settings)
    paths = write_report(results, settings, args.out, inputs.context, gallery)
    sys.stdout.write(paths["markdown"].read_text(encoding="utf-8"))
    sys.stdout.write("\nwrote " + ", ".join(str(p) for p in paths.values()) + "\n")
    return 0
