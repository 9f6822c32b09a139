"""The ``torch.onnx.export`` call of every facexai export, and its failures said in one line."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from facexai.export.errors import ExportError
from facexai.export.metadata import ExportMetadata, first_line

logger = logging.getLogger(__name__)


def torch_export(
    module: nn.Module, example: tuple[Tensor, ...], path: Path, meta: ExportMetadata, external_data: bool, name: str
) -> None:
    """``torch.onnx.export(dynamo=True)`` with one dynamic batch dimension shared by all inputs.

    Weights go into the ``.onnx`` file itself (one file to deploy) unless protobuf's 2 GB limit
    is near; then they are written to ``<name>.data`` beside it.

    Raises:
        ExportError: the exporter failed; names the model (``name``) and the operator or source
            line the exporter blames (its own message is pages of advice for torch developers).
    """
    batch = torch.export.Dim("batch", min=1, max=65536)
    captured = io.StringIO()  # the exporter prints progress lines; a library must not
    try:
        with contextlib.redirect_stdout(captured), warnings.catch_warnings():
            # inputs sharing the batch Dim make the exporter note that it keeps one name: expected
            warnings.filterwarnings("ignore", message=".*axis name: batch will not be used")
            torch.onnx.export(
                module,
                example,
                str(path),
                dynamo=True,
                dynamic_shapes=tuple({0: batch} for _ in example),
                input_names=list(meta.input_names),
                output_names=list(meta.output_names),
                external_data=external_data,
                verbose=False,
            )
    except Exception as err:  # TorchExportError, ConversionError, and torch internals they do not wrap
        raise ExportError(f"torch.onnx could not export {name}: {export_failure(err)}") from err
    finally:
        logger.debug("torch.onnx.export output:\n%s", captured.getvalue())


#: how the exporter names an operator it cannot translate, and the user line torch.export blames
OPERATOR = re.compile(r"OpOverload\(op='([\w.]+)'|target=torch\.ops\.([\w.]+?)(?:\.default)?\]|(aten::\w+)")
USER_LINE = re.compile(r'The following call raised this error:\s*File "([^"]+)", line (\d+)[^\n]*\n\s*(.+)')


def export_failure(err: BaseException) -> str:
    """The cause of an exporter failure in one line: operator or source line, and the first message line.

    The exporter wraps the real error (``DispatchError``, ``GuardOnDataDependentSymNode``, ...)
    in ``__cause__`` chains; the innermost one says what went wrong.
    """
    chain = [err]
    while chain[-1].__cause__ is not None and len(chain) < 20:
        chain.append(chain[-1].__cause__)
    text = "\n".join(str(e) for e in chain)
    root = chain[-1]
    summary = f"{type(root).__name__}: {first_line(root)}"
    if (found := OPERATOR.search(text)) is not None:
        operator = next(group for group in found.groups() if group)
        return f"operator {operator} has no ONNX translation ({summary})"
    if (line := USER_LINE.search(text)) is not None:
        return f"torch.export cannot follow {line[1]}:{line[2]} ({line[3].strip()}): {summary}"
    return summary
