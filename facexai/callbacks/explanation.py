"""ExplanationCallback: explanations, faithfulness metrics and heatmaps during validation.

On the first validation batch(es) of selected epochs the callback explains a few samples with
each configured explainer, feeds the faithfulness/localisation metrics, logs heatmap grids (one
per explainer, and for face pairs one comparing all explainers under ``xai/compare/``) and
mean deletion/insertion curves to TensorBoard and the metric values as
``val/xai/<explainer>/<metric>[_pos|_neg]`` scalars (``docs/tensorboard.md`` lists every tag).
The explaining and scoring is :mod:`facexai.pipeline`, which ``evaluate`` runs too, so the same
settings give the same numbers in both. It works with facexai modules (which say what to explain
via ``explanation_inputs``/``explained_model``) and with any LightningModule through a few
constructor arguments (see :class:`~facexai.pipeline.inputs.BatchAdapter`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor

from facexai.callbacks.config import channel_stats, check_labels, check_options, png_name, set_of, tag_label
from facexai.callbacks.overlays import curves_figure, make_denormaliser, save_grid
from facexai.callbacks.rendering import add_picture, render_comparison, render_views, tensorboard_writers
from facexai.explain import Explainer
from facexai.metrics.inputs import MAPS_AND_MASKS
from facexai.pipeline import (
    BatchAdapter,
    ExplanationInputs,
    MetricSuite,
    View,
    build_explainers,
    check_layers,
    explain_and_score,
    parse_metric_specs,
    plain_mode,
    synchronize,
)

#: who the pipeline names in its messages
OWNER = "ExplanationCallback"
#: deletion and insertion AUC, and the energy pointing game when the batches carry masks
DEFAULT_METRICS = ("deletion_auc", "insertion_auc", "energy_pointing_game")


class ExplanationCallback(pl.Callback):
    """Explain validation samples, score the explanations and log them, every few epochs.

    Example (YAML for LightningCLI; in Python pass the same values as keyword arguments)::

        trainer:
          callbacks:
            - class_path: facexai.callbacks.ExplanationCallback
              init_args:
                explainers: {gradcam: {}, fame: {iterations: 20}}
                metrics: {deletion_auc: {steps: 20}, insertion_auc: {steps: 20}}
                every_n_epochs: 2
                max_samples: 8

    Args:
        explainers: names (``["gradcam", "liftcam"]``), ``name -> options``
            (``{"gradcam": {}, "fame": {"iterations": 20}}``; ``method`` in the options runs one
            method under another label) or Explainer instances. Default: Grad-CAM.
        metrics: names from ``facexai.callbacks.callback_metrics()`` or ``name -> options``
            (``{"deletion_auc": {"steps": 20}}``); the score and the Average Drop form follow
            the view (``docs/tensorboard.md``). Default: deletion and insertion AUC, plus the
            energy pointing game on batches that carry masks.
        every_n_epochs: explain in epochs 0, n, 2n, ... of ``fit``; ``validate``/``test`` always.
        max_samples: images (classifiers) or pairs (faces) explained per batch.
        batches_per_epoch: how many leading batches of the first validation loader to explain;
            images are logged for the first one.
        target: "label" explains the true class, "prediction" the predicted one (classifiers).
        target_layer: default layer of every CAM-type explainer that has no ``target_layer``.
        explain_dissimilar: for face pairs also compute e- maps (what pushes a pair apart).
        explain_all_sets: explain every validation dataloader, not only the first; metrics and
            images are then tagged per set (``val/xai/<set>/<explainer>/...``), the set named by
            the module's ``val_set_names`` (e.g. lfw, cfp_fp) or ``set<index>``.
        model_attr: attribute (dotted) holding the network of a module without
            ``explained_model``; ``None`` explains the module's own ``forward``.
        image_key: batch key of single images (dict batches).
        label_key: batch key of class labels.
        pair_keys: batch keys of the two images of face pairs.
        issame_key: batch key of genuine (True) / impostor labels of pairs.
        mask_key: batch key of ground-truth masks (N, H, W) of single images.
        pair_mask_keys: batch keys of the masks of the two pair images.
        class_names: names shown in captions (default: the module's ``class_names``).
        mean: normalisation mean to undo for display and ROAD; default facexai's 0.5.
        std: normalisation std; default facexai's 0.5.
        colormap: any matplotlib colour map; ``inferno`` (default), ``magma``, ``plasma``,
            ``viridis``, ``turbo`` and ``cividis`` are perceptually ordered, ``jet`` looks like
            most explanation papers.
        tile_size: pixels per tile in the logged grids (default 112, the ArcFace crop size, so
            that 64 px demo faces are enlarged rather than shrunk).
        log_images: log heatmap grids (TensorBoard loggers only; other loggers are skipped).
        log_comparison: for face pairs also log ``xai/compare/pairs_pos`` (and ``pairs_neg``):
            every explainer side by side, mask outlines, a colour bar
            (:func:`~facexai.callbacks.rendering.comparison_grid`).
        log_method_grids: log one grid per explainer (``xai/<explainer>/pairs_pos``, ...,
            ``heatmaps``). For face pairs the comparison grid holds the same maps; turning these
            off halves the pictures' drawing and PNG encoding, the largest cost after FAME.
        log_curves: log mean deletion/insertion curves as figures.
        max_time_share: warn once when explaining takes more than this share of a validation
            epoch; ``None`` never warns.
        png_dir: also save every logged grid as ``<png_dir>/<explainer>_<kind>.png`` (rank zero).
    """

    def __init__(
        self,
        explainers: dict[str, dict[str, Any] | None] | list[str | Explainer] | None = None,
        metrics: dict[str, dict[str, Any] | None] | list[str] | None = None,
        every_n_epochs: int = 1,
        max_samples: int = 8,
        batches_per_epoch: int = 1,
        target: Literal["label", "prediction"] = "label",
        target_layer: str | None = None,
        explain_dissimilar: bool = True,
        explain_all_sets: bool = False,
        model_attr: str | None = "model",
        image_key: str = "image",
        label_key: str = "label",
        pair_keys: tuple[str, str] = ("image_a", "image_b"),
        issame_key: str = "issame",
        mask_key: str | None = "mask",
        pair_mask_keys: tuple[str, str] | None = ("mask_a", "mask_b"),
        class_names: list[str] | None = None,
        mean: float | list[float] | None = None,
        std: float | list[float] | None = None,
        colormap: str = "inferno",
        tile_size: int = 112,
        log_images: bool = True,
        log_comparison: bool = True,
        log_method_grids: bool = True,
        log_curves: bool = True,
        max_time_share: float | None = 0.15,
        png_dir: str | None = None,
    ) -> None:
        super().__init__()
        check_options(
            every_n_epochs=every_n_epochs,
            max_samples=max_samples,
            batches_per_epoch=batches_per_epoch,
            tile_size=tile_size,
            colormap=colormap,
            max_time_share=max_time_share,
        )
        self.explainers = build_explainers(explainers, target_layer)
        check_labels(self.explainers)
        self.adapter = BatchAdapter(
            model_attr, image_key, label_key, pair_keys, issame_key, mask_key, pair_mask_keys, target
        )
        self.explicit_metrics = metrics is not None
        self.denormalise = make_denormaliser(mean, std)
        specs = parse_metric_specs(DEFAULT_METRICS if metrics is None else metrics, OWNER, dataset_level=False)
        self.suite = MetricSuite(specs, *channel_stats(mean, std), owner=OWNER)
        self.every_n_epochs, self.max_samples, self.batches_per_epoch = every_n_epochs, max_samples, batches_per_epoch
        self.explain_dissimilar, self.class_names = explain_dissimilar, class_names
        self.explain_all_sets = explain_all_sets
        self.colormap, self.tile_size = colormap, tile_size
        self.log_images, self.log_curves, self.log_comparison = log_images, log_curves, log_comparison
        self.log_method_grids = log_method_grids
        self.max_time_share, self.png_dir = max_time_share, png_dir
        #: CPU maps of the last explained first batch: label -> {"maps" | "pos" | "neg": (N, H, W)}
        self.last_maps: dict[str, dict[str, Tensor]] = {}
        #: the last logged grids, tag -> (3, H, W) image in [0, 1]
        self.last_grids: dict[str, Tensor] = {}
        self._active = False
        self._times: dict[str, float] = {}  # explainer label -> seconds explaining and scoring
        self._logging_s = 0.0  # seconds rendering and writing pictures
        self._epoch_start = 0.0
        self._once: set[str] = set()

    # ----------------------------------------------------------------- Lightning hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Fail before training if the network or a configured layer cannot be found."""
        check_layers(self.explainers, self.adapter.resolve_model(pl_module))

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Decide whether this epoch explains (test epochs always do), and clear the metrics."""
        self._start_epoch(trainer, pl_module)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Explain and score the leading batch(es); log pictures of the first."""
        self._on_batch(trainer, pl_module, batch, batch_idx, dataloader_idx, _stage(trainer))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the epoch's metric values, curves and times (under ``test/`` in a test run)."""
        self._end_epoch(trainer, pl_module, _stage(trainer))

    # a test run is explained like a validation run; its tags start with test/
    on_test_epoch_start = on_validation_epoch_start
    on_test_batch_end = on_validation_batch_end
    on_test_epoch_end = on_validation_epoch_end

    # ----------------------------------------------------------------- epoch flow
    def _start_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._active = not trainer.sanity_checking and (
            trainer.state.fn != TrainerFn.FITTING or trainer.current_epoch % self.every_n_epochs == 0
        )
        self._times, self._logging_s, self._epoch_start = {}, 0.0, time.perf_counter()
        with plain_mode(pl_module.device.type):
            self.suite.to(pl_module.device)
            self.suite.reset()

    def _on_batch(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
        stage: str,
    ) -> None:
        if (dataloader_idx != 0 and not self.explain_all_sets) or batch_idx >= self.batches_per_epoch:
            return
        if trainer.sanity_checking and batch_idx == 0:
            # Reading the batch is cheap: a batch format the callback cannot read fails here,
            # before the first training epoch, instead of after it.
            with plain_mode(pl_module.device.type):
                self._check_inputs(self.adapter.read(pl_module, batch, self.max_samples))
        if not self._active:
            return
        with plain_mode(pl_module.device.type):
            inputs = self.adapter.read(pl_module, batch, self.max_samples)
            self._check_inputs(inputs)
            views = self._explain_all(pl_module, inputs, self._set_prefix(pl_module, dataloader_idx))
        if batch_idx == 0:
            start = time.perf_counter()
            self._log_first_batch(trainer, pl_module, inputs, views, stage)
            self._logging_s += time.perf_counter() - start

    def _set_prefix(self, pl_module: pl.LightningModule, dataloader_idx: int) -> str:
        """``"<set>/"`` when every validation set is explained, else no prefix."""
        if not self.explain_all_sets:
            return ""
        names = getattr(pl_module, "val_set_names", None) or []
        return f"{names[dataloader_idx] if dataloader_idx < len(names) else f'set{dataloader_idx}'}/"

    def _explain_all(
        self, pl_module: pl.LightningModule, inputs: ExplanationInputs, set_prefix: str = ""
    ) -> dict[str, list[View]]:
        model = self.adapter.resolve_model(pl_module)
        self.suite.count(len(inputs.images) // (2 if inputs.pairs else 1), inputs.images.device)
        return {
            set_prefix + name: self._explain_one(set_prefix + name, explainer, model, inputs)
            for name, explainer in self.explainers.items()
        }

    def _explain_one(
        self, label: str, explainer: Explainer, model: torch.nn.Module, inputs: ExplanationInputs
    ) -> list[View]:
        """One explainer's views (e+ and e- for face pairs), scored by the metrics and timed.

        bf16/fp16 networks take the float32 images the metrics perturb (Lightning's "-true"
        precisions convert the batch, a network converted by hand gets float32 batches).
        """
        start = time.perf_counter()
        views = explain_and_score(
            self.suite,
            tag_label(label),
            lambda spec, target: explainer(model, inputs.images, target),
            inputs,
            model,
            self.explain_dissimilar,
        )
        synchronize(inputs.images.device)
        self._times[label] = self._times.get(label, 0.0) + time.perf_counter() - start
        return views

    def _end_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self._active:
            return
        prefix = "" if stage == "val" else f"{stage}/"
        with plain_mode(pl_module.device.type):
            values = self.suite.compute()
            curves = self.suite.mean_curves() if self.log_curves else {}
        if trainer.is_global_zero:
            start = time.perf_counter()
            self._log_epoch_figures(trainer, curves, prefix)
            self._logging_s += time.perf_counter() - start
        times = {f"{tag_label(label)}/time_s": seconds for label, seconds in self._times.items()}
        times["time_s"] = sum(self._times.values()) + self._logging_s
        for key, value in values.items():
            # The suite agreed its keys across ranks, so every rank logs the same names and the
            # (already synced) values' sync_dist all-reduce pairs up; it only keeps Lightning's
            # DDP warning away.
            pl_module.log(
                f"{stage}/xai/{key}", value, on_step=False, on_epoch=True, sync_dist=True, add_dataloader_idx=False
            )
        for key, seconds in times.items():
            # Times are per rank and their labels follow the batches a rank saw (with
            # explain_all_sets a rank may see no batch of a set): a synced log would pair up
            # different all-reduces across ranks and hang, so rank zero reports its own times.
            pl_module.log(
                f"{prefix}xai/{key}",
                seconds,
                on_step=False,
                on_epoch=True,
                rank_zero_only=True,
                add_dataloader_idx=False,
            )
        self._check_time(times["time_s"], time.perf_counter() - self._epoch_start)
        with plain_mode(pl_module.device.type):
            self.suite.reset()
        self._active = False

    # ----------------------------------------------------------------- logging
    def _log_first_batch(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        inputs: ExplanationInputs,
        views: Mapping[str, Sequence[View]],
        stage: str,
    ) -> None:
        self.last_maps = {
            label: {view.suffix or "maps": view.maps.detach().float().cpu() for view in label_views}
            for label, label_views in views.items()
        }
        if not (trainer.is_global_zero and self.log_images):
            return
        prefix = "" if stage == "val" else f"{stage}/"
        names = self.class_names or getattr(pl_module, "class_names", None)
        when = f"epoch {trainer.current_epoch}  step {trainer.global_step}"
        method_views = views if self.log_method_grids else {}
        for label, label_views in method_views.items():
            grids = render_views(
                inputs, label_views, self.denormalise, names, self.colormap, self.tile_size, f"{label}  {when}"
            )
            for kind, grid in grids.items():
                self._write_grid(trainer, f"{prefix}xai/{tag_label(label)}/{kind}", grid)
        if self.log_comparison and len(views) > 0:
            compare = f"{prefix}xai/{set_of(next(iter(views)))}compare"
            for kind, picture in render_comparison(
                inputs, views, self.denormalise, self.colormap, self.tile_size, when
            ).items():
                self._write_grid(trainer, f"{tag_label(compare)}/{kind}", picture)

    def _write_grid(self, trainer: pl.Trainer, tag: str, grid: Tensor | np.ndarray) -> None:
        """Log one picture under ``tag`` (and save it under ``png_dir``): uint8 (H, W, 3) or (3, H, W) in [0, 1]."""
        if isinstance(grid, np.ndarray):
            picture, grid = grid, torch.from_numpy(grid).permute(2, 0, 1).float() / 255
        else:
            picture = (grid.detach().float().cpu().clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        for writer in tensorboard_writers(trainer):
            add_picture(writer, tag, picture, trainer.global_step)
        self.last_grids[tag] = grid
        if self.png_dir is not None:
            save_grid(picture, Path(self.png_dir) / png_name(tag))  # already uint8: no second conversion

    def _log_epoch_figures(
        self, trainer: pl.Trainer, curves: dict[str, dict[str, dict[str, Tensor]]], prefix: str
    ) -> None:
        writers = tensorboard_writers(trainer)
        if writers and self.suite.metrics and "settings" not in self._once:
            self._once.add("settings")
            text = "\n".join(f"- `{key}`: `{name}`" for key, name in self.suite.settings().items())
            for writer in writers:
                writer.add_text(f"{prefix}xai/settings", text, global_step=trainer.global_step)
        for label, panels in curves.items():
            for writer in writers:
                writer.add_figure(f"{prefix}xai/{label}/curves", curves_figure(panels, label), trainer.global_step)

    def _check_inputs(self, inputs: ExplanationInputs) -> None:
        """Warn once when explicitly requested mask metrics cannot run on these batches."""
        missing = [name for name in self.suite.names(MAPS_AND_MASKS) if inputs.masks is None]
        if missing and self.explicit_metrics and "masks" not in self._once:
            self._once.add("masks")
            keys = self.adapter.pair_mask_keys if inputs.pairs else self.adapter.mask_key
            rank_zero_warn(
                f"ExplanationCallback: {missing} need ground-truth masks, but the batches have none "
                f"under {keys!r}; these metrics are skipped. Set mask_key/pair_mask_keys."
            )

    def _check_time(self, explain_s: float, epoch_s: float) -> None:
        if self.max_time_share is None or "time" in self._once or epoch_s <= 0:
            return
        if explain_s > self.max_time_share * epoch_s:
            self._once.add("time")
            rank_zero_warn(
                f"ExplanationCallback took {explain_s:.1f} s of a {epoch_s:.1f} s validation epoch "
                f"({explain_s / epoch_s:.0%} > max_time_share={self.max_time_share:.0%}). Lower "
                "max_samples, raise every_n_epochs, reduce metric steps or explainer options "
                "(e.g. fame iterations, corrrise n_masks)."
            )

    def save_grids(self, directory: str | Path) -> list[Path]:
        """Save the last logged grids as PNGs in ``directory`` (e.g. for ``docs/``)."""
        return [save_grid(grid, Path(directory) / png_name(tag)) for tag, grid in self.last_grids.items()]


def _stage(trainer: pl.Trainer) -> str:
    """The stage a batch belongs to: "test" in ``trainer.test``, else "val" (fit and validate)."""
    return "test" if trainer.testing else "val"
