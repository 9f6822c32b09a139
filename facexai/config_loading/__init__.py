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

The parts: :mod:`~facexai.config_loading.yaml_limits` (reading YAML within bounds),
:mod:`~facexai.config_loading.class_paths` (which classes a config may name, and building them),
:mod:`~facexai.config_loading.checkpoints` (weights-only checkpoints and the modules they fit).
Import from here; the names below are the interface.
"""

from facexai.config_loading.checkpoints import load_module, load_weights, read_checkpoint
from facexai.config_loading.class_paths import (
    NESTED_PACKAGES,
    SHORT_NAME_PACKAGES,
    SPEC_KEYS,
    TRUSTED_PACKAGES,
    ClassSpec,
    build,
    lightning_bases,
    load_config_specs,
    parse_spec,
    resolve_class,
    section_specs,
    seed_of,
)
from facexai.config_loading.errors import CheckpointError, ConfigError
from facexai.config_loading.yaml_limits import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_NODES,
    check_size,
    flow_depth,
    parse_yaml,
    read_config,
)

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_NODES",
    "NESTED_PACKAGES",
    "SHORT_NAME_PACKAGES",
    "SPEC_KEYS",
    "TRUSTED_PACKAGES",
    "CheckpointError",
    "ClassSpec",
    "ConfigError",
    "build",
    "check_size",
    "flow_depth",
    "lightning_bases",
    "load_config_specs",
    "load_module",
    "load_weights",
    "parse_spec",
    "parse_yaml",
    "read_checkpoint",
    "read_config",
    "resolve_class",
    "section_specs",
    "seed_of",
]
