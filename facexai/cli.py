"""Command line: ``python -m facexai fit|validate|test|predict`` (LightningCLI) and tool commands.

Trainer sub-commands take YAML configs (``--config configs/demo.yaml``, ``--print_config``); the
model and data are given by ``class_path`` so any LightningModule/DataModule can be used. Tool
sub-commands (``explain``, ``evaluate``, ``export``, ``audit``, ``align``, ``pack-rec``) have their
own ``--help``; ``explain`` and ``evaluate --model`` take a pretrained face model file and need no
YAML.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

TRAINER_COMMANDS = ("fit", "validate", "test", "predict")

USAGE = """usage: python -m facexai <command> [options]

Training and evaluation (LightningCLI; each takes --config FILE.yaml, --print_config, --help):
  fit        train a model (e.g. --config configs/demo.yaml)
  validate   run validation (pair metrics, explanations) on a checkpoint (--ckpt_path)
  test       run the test loop
  predict    run prediction (embeddings or class probabilities)

Tools:
  export     export a checkpoint to ONNX (optionally with an explainer in the graph)
  audit      audit an ONNX face model on a pairs file (no PyTorch needed)
  explain    explain one pair of face crops with a face model file (e+ and e- maps, PNG per explainer)
  evaluate   compare explainers with faithfulness metrics (--config YAML, or --model with --bin/--pairs)
  align      align face images to the ArcFace 112x112 template from 5-point landmarks
  pack-rec   pack an identity-folder tree into insightface RecordIO (train.rec/train.idx)
"""


def run_lightning(args: Sequence[str]) -> None:
    """LightningCLI with facexai's defaults: gradients allowed in validation for explainers."""
    import pytorch_lightning as pl
    from pytorch_lightning.cli import LightningCLI

    import facexai.callbacks  # noqa: F401  makes class_path short names resolvable
    import facexai.data  # noqa: F401
    import facexai.models  # noqa: F401

    LightningCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults={"inference_mode": False},
        save_config_kwargs={"overwrite": True},
        args=list(args),
    )


def align_main(argv: Sequence[str]) -> int:
    """``facexai align``: align a folder of faces with a landmarks file."""
    parser = argparse.ArgumentParser(prog="python -m facexai align", description=align_main.__doc__)
    parser.add_argument("--src", required=True, help="folder of input images")
    parser.add_argument(
        "--landmarks", required=True, help="CSV (filename,x1,y1,...,x5,y5) or JSON {filename: [[x,y]*5]}"
    )
    parser.add_argument("--dst", required=True, help="output folder (same relative paths)")
    parser.add_argument("--image-size", type=int, default=112, help="output side (default 112)")
    args = parser.parse_args(list(argv))
    from facexai.data.align import align_folder

    count = align_folder(args.src, args.landmarks, args.dst, image_size=args.image_size)
    sys.stdout.write(f"aligned {count} images into {args.dst}\n")
    return 0


def pack_main(argv: Sequence[str]) -> int:
    """``facexai pack-rec``: pack identity folders into train.rec/train.idx."""
    parser = argparse.ArgumentParser(prog="python -m facexai pack-rec", description=pack_main.__doc__)
    parser.add_argument("--src", required=True, help="root/<identity>/<image> folder")
    parser.add_argument("--dst", required=True, help="output folder for train.rec and train.idx")
    args = parser.parse_args(list(argv))
    from facexai.data.recordio import pack_image_folder

    result = pack_image_folder(args.src, args.dst)
    sys.stdout.write(f"packed {result.num_images} images of {len(result.class_names)} identities into {args.dst}\n")
    return 0


def _tool(module: str, name: str) -> Callable[[Sequence[str]], int]:
    def run(argv: Sequence[str]) -> int:
        import importlib

        return getattr(importlib.import_module(module), name)(list(argv))

    return run


TOOLS: dict[str, Callable[[Sequence[str]], int]] = {
    "align": align_main,
    "pack-rec": pack_main,
    "export": _tool("facexai.export.cli", "export_main"),
    "audit": _tool("facexai.export.cli", "audit_main"),
    "evaluate": _tool("facexai.evaluate.cli", "evaluate_main"),
    "explain": _tool("facexai.explain_pair", "explain_main"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m facexai`` and the ``facexai`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in TRAINER_COMMANDS and command not in TOOLS:
        sys.stderr.write(f"facexai: error: unknown command {command!r}\n\n{USAGE}")
        return 2
    try:
        if command in TRAINER_COMMANDS:
            run_lightning([command, *rest])
            return 0
        return TOOLS[command](rest)
    except Exception as err:  # only user errors are caught; anything else is re-raised
        # User errors (bad paths, names, files, configs, untraceable models) are explained in one
        # line; FACEXAI_DEBUG=1 shows the traceback for bug reports.
        message = user_error_message(err)
        if message is None or os.environ.get("FACEXAI_DEBUG"):
            raise
        sys.stderr.write(f"facexai: error: {message}\n")
        return 2


#: path errors a user makes (missing file, no permission, a folder where a file belongs)
PATH_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def user_error_message(err: BaseException) -> str | None:
    """One line for a user error, or None for a bug (which keeps its traceback).

    User errors are ``ValueError`` and its subclasses (facexai's ConfigError, CheckpointError,
    ExportError...), path errors, and torch.onnx's exporter errors (a model the exporter cannot
    trace is a property of the user's model, not a facexai crash). torch.onnx errors are
    recognised by module name so that this dispatcher never imports torch (``audit`` runs
    without it), and cut to their first line: the rest is a graph dump. ValueError messages are
    kept whole: facexai's are one line, and LightningCLI's name the bad value on a later line.
    """
    if _from_torch_onnx(err):
        return one_line(err)
    if isinstance(err, (ValueError, *PATH_ERRORS)):
        return str(err).strip() or type(err).__name__
    return None


def _from_torch_onnx(err: BaseException) -> bool:
    return any(cls.__module__.startswith("torch.onnx") for cls in type(err).__mro__)


def one_line(err: BaseException) -> str:
    """The first non-empty line of an error's message, noting that there is more."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[0] + (" (FACEXAI_DEBUG=1 shows the details)" if len(lines) > 1 else "")


if __name__ == "__main__":
    sys.exit(main())
