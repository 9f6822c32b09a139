"""Command functions ``export_main`` and ``audit_main`` for ``python -m facexai export|audit``.

Both take ``argv`` (without the sub-command) and return an exit status: 0 on success, 2 on a user
error (the message goes to stderr, no traceback). This module imports nothing heavy at import
time: ``audit_main`` must work without torch, so the export path imports torch lazily.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, overload

from facexai.cli import user_error_message


class ExportableNames(Sequence[str]):
    """The exportable explainer names, read from the explainer classes when first asked for.

    Reading them imports the explainers, hence torch (seconds). Building the parser and running
    ``audit`` must not pay that, so ``--explainer`` takes this sequence as its ``choices``: it is
    consulted only when ``--explainer`` is given (the export imports torch anyway), for
    ``--help``, or to list the names in an error.
    """

    @cached_property
    def _names(self) -> tuple[str, ...]:
        from facexai.explain import exportable_explainers

        return tuple(exportable_explainers())

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self._names[index]

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)


#: names accepted by ``--explainer``: :func:`facexai.explain.exportable_explainers`, read lazily
EXPORT_EXPLAINERS = ExportableNames()
MODULE_CLASSES = ("ClassifierModule", "VerificationModule")

EXPORT_EPILOG = """\
examples:
  python -m facexai export --ckpt_path last.ckpt --output face.onnx
  python -m facexai export --ckpt_path last.ckpt --output face_gradcam.onnx --explainer gradcam

The plain verification graph follows the insightface ArcFace layout: input (N, 3, S, S) RGB as
(pixel - 127.5) / 127.5, output (N, D); insightface.model_zoo.get_model loads it at S = 112.
S defaults to the checkpoint's own side (backbone_kwargs.img_size, the backbone's img_size or
timm config); other sides export with a note (insightface's ArcFaceONNX expects 112 px). With
--input_format raw_pixels the normalisation is inside the graph (insightface detects it).
With --explainer the graph takes (images, target): class indices (N,) int64 for classifiers or
partner embeddings (N, D) for verification, and returns (output, map (N, S, S)[, similarity]).
Every file is checked with onnx.checker and against PyTorch on fresh noise and synthetic faces
(max |ONNX - PyTorch| <= --tolerance); a model whose PyTorch output is not reproducible (random
noise in eval mode) or whose map differs beyond the tolerance is refused, and the previous
--output file, if any, is kept. Checkpoints are read with torch.load(weights_only=True): no
pickled code is executed.
"""

AUDIT_EPILOG = """\
examples:
  python -m facexai audit --onnx face_gradcam.onnx --pairs pairs.txt --images-root lfw/ --out report/
  python -m facexai audit --onnx w600k_r50.onnx --pairs pairs.txt --images-root lfw/ --out report/ --masks 300

Any ONNX face-embedding model is accepted. facexai exports describe their input in their metadata.
Other models are read with the insightface convention: one input (N, 3, S, S) with S from the
graph, RGB, (pixel - 127.5) / 127.5, one output (N, D); --input-size, --mean, --std and
--channel-order override it (mean/std: one value or one per graph channel, in channel order).
Graphs with an explainer inside give the maps; for all others CorrRISE runs as a black box on
onnxruntime (2 * --masks forward passes per pair, first --map-pairs pairs; --no-maps skips it).

Pairs files: optional header, then 'name i j' (LFW genuine), 'name1 i name2 j' (LFW impostor) or
'path_a path_b 0|1' (paths relative to --images-root). Writes report/index.html (overlays,
similarities, ROC AUC / EER / best accuracy, deletion and insertion curves with a mean-colour
baseline) and report/report.json. Needs only numpy, onnxruntime, Pillow and tqdm (no torch).
"""


def _parser(command: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """A parser for ``python -m facexai <command>`` whose epilog keeps its line breaks."""
    return argparse.ArgumentParser(
        prog=f"python -m facexai {command}",
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def export_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m facexai export``."""
    parser = _parser(
        "export",
        "Export a facexai checkpoint to ONNX (optionally with an explainer in the graph), "
        "check it with onnx.checker and against PyTorch with onnxruntime.",
        EXPORT_EPILOG,
    )
    parser.add_argument("--ckpt_path", "--ckpt-path", required=True, type=Path, help="Lightning checkpoint (.ckpt)")
    parser.add_argument("--output", "-o", required=True, type=Path, help="ONNX file to write")
    parser.add_argument(
        "--explainer",
        choices=EXPORT_EXPLAINERS,
        metavar="NAME",  # not {a,b,...}: argparse would read the choices, importing torch, at once
        help="trace this explainer into the graph: %(choices)s",
    )
    parser.add_argument("--target_layer", "--target-layer", help="CAM layer (dotted name in the backbone)")
    parser.add_argument(
        "--input_size",
        "--input-size",
        type=int,
        default=None,
        help="square input side (default: the checkpoint's, e.g. backbone_kwargs.img_size; else 112)",
    )
    parser.add_argument(
        "--input_format",
        "--input-format",
        choices=("normalised", "raw_pixels"),
        default="normalised",
        help="normalised: feed (x - 127.5) / 127.5 (default); raw_pixels: normalise in the graph",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="optional training YAML whose 'model' section (class_path/init_args) rebuilds the "
        "module, for checkpoints without hyper_parameters",
    )
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed |ONNX - PyTorch| (default 1e-4)")
    parser.add_argument("--verbose", "-v", action="store_true", help="log the export steps")
    return parser


def audit_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m facexai audit``."""
    parser = _parser(
        "audit",
        "Audit an ONNX face-verification model (a facexai export or any third-party "
        "embedding model) on face pairs, with explanation maps (no torch needed).",
        AUDIT_EPILOG,
    )
    parser.add_argument("--onnx", required=True, type=Path, help="ONNX face model (facexai export or third-party)")
    parser.add_argument("--pairs", required=True, type=Path, help="pairs file")
    parser.add_argument("--images-root", "--images_root", required=True, type=Path, help="root of the image paths")
    parser.add_argument("--out", required=True, type=Path, help="report folder (created)")
    parser.add_argument("--batch-size", "--batch_size", type=int, default=16, help="pairs per batch (default 16)")
    parser.add_argument("--steps", type=int, default=20, help="deletion/insertion steps (default 20)")
    parser.add_argument(
        "--curve-pairs",
        "--curve_pairs",
        type=int,
        default=32,
        help="pairs whose deletion/insertion curves are computed (default 32)",
    )
    parser.add_argument(
        "--max-shown", "--max_shown", type=int, default=100, help="pairs shown in index.html (default 100)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    model = parser.add_argument_group("input of models without facexai metadata (override the insightface convention)")
    model.add_argument(
        "--input-size", "--input_size", type=int, help="square input side (default: the graph's, else 112)"
    )
    model.add_argument("--mean", type=float, nargs="+", metavar="M", help="subtracted per channel (default 127.5)")
    model.add_argument("--std", type=float, nargs="+", metavar="S", help="divided per channel (default 127.5)")
    model.add_argument(
        "--channel-order", "--channel_order", choices=("RGB", "BGR"), help="graph channel order (default RGB)"
    )
    maps = parser.add_argument_group("black-box maps (CorrRISE) for graphs without an explainer")
    maps.add_argument("--no-maps", action="store_true", help="no CorrRISE maps (and so no curves)")
    maps.add_argument(
        "--map-pairs", "--map_pairs", type=int, default=16, help="pairs from the top that get maps (default 16)"
    )
    maps.add_argument("--masks", type=int, default=500, help="random masks per image (default 500, as the paper)")
    maps.add_argument(
        "--patch-size",
        "--patch_size",
        type=int,
        help="hidden square side in pixels (default: 30 at 112 px, scaled to the input size)",
    )
    maps.add_argument("--patches", type=int, default=3, help="squares per mask (default 3)")
    maps.add_argument("--seed", type=int, default=0, help="mask seed (default 0)")
    return parser


def export_main(argv: list[str]) -> int:
    """``python -m facexai export``: returns 0 on success, 2 on a user error."""
    args = export_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        from facexai.export.onnx import export_onnx

        check_outputs(args)
        module = load_checkpoint(args.ckpt_path, args.config)
        options = _explainer_options(args)
        result = export_onnx(
            module,
            args.output,
            args.input_size,
            args.explainer,
            input_format=args.input_format,
            explainer_options=options,
            checkpoint=args.ckpt_path,
            tolerance=args.tolerance,
        )
    except Exception as err:  # noqa: BLE001 - user errors are one line, bugs keep their traceback
        if not isinstance(err, TypeError) and user_error_message(err) is None:
            raise
        return _fail("export", err)
    meta = result.metadata
    diffs = ", ".join(f"{name} {value:.2g}" for name, value in result.parity.max_abs_diff.items())
    sys.stdout.write(f"wrote {result.path} ({meta.task}, {meta.input_size} px, explainer {meta.explainer or 'none'})\n")
    sys.stdout.write(f"parity vs PyTorch, max abs diff: {diffs}\n")
    for note in meta.notes:
        sys.stdout.write(f"note: {note}\n")
    return 0


def _explainer_options(args: argparse.Namespace) -> dict[str, object] | None:
    """The explainer options the command line sets; ``--target_layer`` needs ``--explainer``."""
    if not args.target_layer:
        return None
    if not args.explainer:
        raise ValueError("--target_layer needs --explainer")
    return {"target_layer": args.target_layer}


def audit_main(argv: list[str]) -> int:
    """``python -m facexai audit``: returns 0 on success, 2 on a user error."""
    args = audit_parser().parse_args(argv)
    _configure_logging(False)
    from facexai.export.audit import AuditOptions, CorrRiseOptions, InputOverrides, run_audit

    corrrise = None if args.no_maps else CorrRiseOptions(args.masks, args.patch_size, args.patches, args.seed)
    options = AuditOptions(
        args.batch_size, args.steps, args.curve_pairs, args.max_shown, not args.no_progress, corrrise, args.map_pairs
    )
    overrides = InputOverrides(args.input_size, _tuple(args.mean), _tuple(args.std), args.channel_order)
    try:
        report = run_audit(args.onnx, args.pairs, args.images_root, args.out, options, overrides)
    except (FileNotFoundError, ValueError) as err:
        return _fail("audit", err)
    metrics = report["metrics"]
    sys.stdout.write(f"wrote {args.out / 'index.html'} and {args.out / 'report.json'} ({metrics['n_pairs']} pairs)\n")
    auc, eer, accuracy = (_num(metrics[k]) for k in ("roc_auc", "eer", "accuracy"))
    sys.stdout.write(f"ROC AUC {auc}, EER {eer}, accuracy {accuracy}\n")
    model = report["model"]
    sys.stdout.write(
        f"model input: {model['input_size']} px {model['channel_order']}, {model['input_source']}; "
        f"maps: {model['maps'] or 'none'}\n"
    )
    for note in model.get("notes") or []:
        sys.stdout.write(f"note: {note}\n")
    return 0


def load_checkpoint(path: Path, config: Path | None = None) -> Any:
    """The facexai LightningModule of a checkpoint, read with ``weights_only=True``.

    One loader serves ``export`` and ``evaluate`` (:func:`facexai.config_loading.load_module`);
    here the config's model must be one of :data:`MODULE_CLASSES`, the modules the exporter knows.

    Raises:
        FileNotFoundError: no checkpoint (or config) file.
        ValueError: (``CheckpointError``/``ConfigError``) not a facexai checkpoint, unreadable
            without unpickling code, or a config naming another class.
    """
    import facexai.models as models
    from facexai.config_loading import load_module

    return load_module(path, config, tuple(getattr(models, name) for name in MODULE_CLASSES))


def check_outputs(args: argparse.Namespace) -> None:
    """``--output`` may not be the checkpoint or the config it is exported from."""
    from facexai.writing import refuse_inputs

    refuse_inputs(args.output, [args.ckpt_path, args.config], what="--output")


def _configure_logging(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _fail(command: str, err: BaseException) -> int:
    sys.stderr.write(f"facexai {command}: error: {user_error_message(err) or err}\n")
    return 2


def _tuple(values: list[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(values)


def _num(value: object) -> str:
    return "n/a" if value is None else f"{value:.4f}"
