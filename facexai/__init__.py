"""facexai: PyTorch Lightning training and evaluation with explanations built in.

Explainers (FAME, FG-CAM, LIFT-CAM and baselines) live in :mod:`facexai.explain`, faithfulness
metrics in :mod:`facexai.metrics`, Lightning modules in :mod:`facexai.models`, data modules in
:mod:`facexai.data`, the TensorBoard callback in :mod:`facexai.callbacks` and ONNX export in
:mod:`facexai.export`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("facexai")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
