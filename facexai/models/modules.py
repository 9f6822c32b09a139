"""LightningModules: an image classifier and an ArcFace-style face-verification model.

Both expose :meth:`explanation_inputs`, the one small method the ExplanationCallback needs: it
turns a validation batch into ``(images, target)`` for an explainer, and ``explained_model``, the
``nn.Module`` whose output the target scores.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, cast

import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from facexai.config_loading import CheckpointError, read_checkpoint
from facexai.explain.pairs import pair_targets
from facexai.explain.targets import ClassTarget, Target
from facexai.metrics.verification import PairVerificationMetrics
from facexai.models.backbones import create_backbone
from facexai.models.face_model import load_face_model
from facexai.models.heads import MARGIN_HEADS
from facexai.models.loading.layout import face_model_info

SCHEDULERS = ("onecycle", "cosine", "none")
#: keys of ``VerificationModule(pretrained_options=...)``, the keyword arguments of load_face_model
PRETRAINED_OPTIONS = ("input_size", "mean", "std", "channel_order", "check_parity")


class _TrainableModule(pl.LightningModule):
    """Optimiser and schedule shared by both modules: AdamW with a one-cycle or cosine schedule.

    One-cycle (warm-up then cosine decay, stepped per batch) is the default because margin
    losses trained from scratch diverge or stall without a warm-up at useful learning rates.
    """

    lr: float
    weight_decay: float
    scheduler: str

    def configure_optimizers(self) -> Any:
        """AdamW with the chosen schedule: one-cycle stepped per batch, cosine per epoch, or none."""
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if self.scheduler == "none":
            return optimizer
        if self.scheduler == "cosine":
            epochs = max(int(self.trainer.max_epochs or 1), 1)
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
            return {"optimizer": optimizer, "lr_scheduler": schedule}
        steps = max(int(self.trainer.estimated_stepping_batches), 1)
        one_cycle = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.lr, total_steps=steps, pct_start=0.15)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": one_cycle, "interval": "step"}}

    def _set_optimisation(self, lr: float, weight_decay: float, scheduler: str) -> None:
        if scheduler not in SCHEDULERS:
            raise ValueError(f"Unknown scheduler {scheduler!r}. Available: {', '.join(SCHEDULERS)}")
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        self.lr, self.weight_decay, self.scheduler = lr, weight_decay, scheduler

    @property
    def explained_model(self) -> nn.Module:
        """The network explainers run on (layer names are relative to it)."""
        raise NotImplementedError


class ClassifierModule(_TrainableModule):
    """Image classifier: a timm backbone with a linear head, cross-entropy and accuracy.

    Batches are dicts with ``image`` (N, 3, H, W) and ``label`` (N,).

    Args:
        backbone: timm model name.
        num_classes: number of classes.
        class_names: optional names shown in logs and heatmap captions.
        weights: optional local state dict for the backbone (weights_only).
        lr: AdamW (peak) learning rate.
        weight_decay: AdamW weight decay.
        scheduler: "onecycle" (per step), "cosine" (per epoch) or "none".
        backbone_kwargs: extra keyword arguments for ``timm.create_model``.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 10,
        class_names: list[str] | None = None,
        weights: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 5e-4,
        scheduler: str = "onecycle",
        backbone_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
        self.save_hyperparameters()
        self._set_optimisation(lr, weight_decay, scheduler)
        self.class_names = class_names
        self.model = create_backbone(backbone, num_classes, weights, **(backbone_kwargs or {}))
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")

    @property
    def explained_model(self) -> nn.Module:
        """The timm classifier, whose logits the class targets score."""
        return self.model

    def forward(self, images: Tensor) -> Tensor:
        """Logits (N, K)."""
        return self.model(images)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Cross-entropy on the batch; loss and accuracy are logged."""
        logits = self(batch["image"])
        loss = F.cross_entropy(logits, batch["label"])
        self.train_acc(logits, batch["label"])
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Log validation loss and accuracy."""
        logits = self(batch["image"])
        self.val_acc(logits, batch["label"])
        self.log("val/loss", F.cross_entropy(logits, batch["label"]), prog_bar=True)
        self.log("val/acc", self.val_acc, prog_bar=True)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """As validation (logged under ``val/``, as the tests and reports expect)."""
        self.validation_step(batch, batch_idx)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Class probabilities (N, K)."""
        return self(batch["image"]).softmax(dim=1)

    def explanation_inputs(self, batch: dict[str, Tensor]) -> tuple[Tensor, Target]:
        """Images and their true classes (the class the model should be looking for)."""
        return batch["image"], ClassTarget(batch["label"])


class VerificationModule(_TrainableModule):
    """Face recognition trained with a margin head and validated on pairs.

    Training batches: ``image`` (N, 3, H, W) and identity ``label`` (N,). Validation batches are
    pairs: ``image_a``, ``image_b`` and ``issame``; each validation dataloader is one named
    verification set (the datamodule's ``val_set_names``), logged as ``val/<set>/<metric>``
    (ROC AUC, EER, TAR@FAR and 10-fold accuracy). An optional ``index`` (the pair's position
    in its set, added by facexai's data modules) makes the 10-fold accuracy independent of the
    number of processes (see :class:`~facexai.metrics.PairVerificationMetrics`).

    A model users already have (an arcface_torch ``backbone.pth``, an insightface ONNX file, a
    facexai checkpoint) is wrapped with ``pretrained``, e.g. to fine-tune it, validate it on
    pairs or explain it with the ExplanationCallback; in YAML::

        model:
          class_path: facexai.models.VerificationModule
          init_args: {pretrained: backbone.pth, num_identities: 1000}

    The file is read by :func:`facexai.models.load_face_model` (``pretrained_options`` are its
    keyword arguments, e.g. ``{input_size: 112, channel_order: BGR}``) and replaces the timm
    backbone: ``backbone`` is ignored, ``backbone_kwargs`` are ignored with a warning and
    ``weights`` is an error. Only the path is
    stored in the hyperparameters: :func:`load_module_checkpoint` re-reads that file to rebuild
    the network before loading the fine-tuned weights, so it must still exist there.

    Args:
        backbone: timm model name (``iresnet50``, ``iresnet_mini``, ``resnet18``, ...).
        num_identities: classes of the training margin head.
        embedding_size: embedding width; None means 128, or with ``pretrained`` the file's
            width. An explicit value that differs from the file's is an error rather than a
            warning, since the margin head would be built for the wrong width.
        margin: "arcface" (defaults s=64, m=0.5) or "cosface" (s=64, m=0.35).
        scale: logit scale s.
        margin_value: margin m; None takes the head's default.
        weights: optional local state dict for the backbone (weights_only).
        lr: AdamW (peak) learning rate.
        weight_decay: AdamW weight decay.
        scheduler: "onecycle" (per step), "cosine" (per epoch) or "none".
        backbone_kwargs: extra keyword arguments for ``timm.create_model`` (e.g. ``img_size``).
        pretrained: a state dict, Lightning checkpoint or ONNX face model to use as backbone.
        pretrained_options: keyword arguments of ``load_face_model`` for ``pretrained``.
    """

    def __init__(
        self,
        backbone: str = "iresnet_mini",
        num_identities: int = 100,
        embedding_size: int | None = None,
        margin: str = "arcface",
        scale: float = 64.0,
        margin_value: float | None = None,
        weights: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 5e-4,
        scheduler: str = "onecycle",
        backbone_kwargs: dict[str, Any] | None = None,
        pretrained: str | None = None,
        pretrained_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if margin not in MARGIN_HEADS:
            raise ValueError(f"Unknown margin {margin!r}. Available: {', '.join(MARGIN_HEADS)}")
        self.save_hyperparameters()
        self._set_optimisation(lr, weight_decay, scheduler)
        if pretrained is None:
            if pretrained_options:
                raise ValueError("pretrained_options is set but pretrained is not; give the file to load")
            embedding_size = 128 if embedding_size is None else embedding_size
            self.backbone = create_backbone(backbone, embedding_size, weights, **(backbone_kwargs or {}))
        else:
            self.backbone = _pretrained_backbone(pretrained, pretrained_options, weights, backbone_kwargs)
            embedding_size = _pretrained_width(self.backbone, embedding_size, pretrained)
        head_kwargs = {"scale": scale} if margin_value is None else {"scale": scale, "margin": margin_value}
        self.head = MARGIN_HEADS[margin](embedding_size, num_identities, **head_kwargs)
        self.val_set_names: list[str] = ["val"]
        self.pair_metrics = nn.ModuleList([PairVerificationMetrics()])

    @property
    def explained_model(self) -> nn.Module:
        """The embedding network; pair targets score its embeddings (the margin head is training-only)."""
        return self.backbone

    def forward(self, images: Tensor) -> Tensor:
        """The embedding (N, D), un-normalised; this is what ONNX export and insightface use."""
        return self.backbone(images)

    def setup(self, stage: str) -> None:
        """One metric collection per verification set the datamodule names (``val`` if none)."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        names = list(getattr(datamodule, "val_set_names", None) or ["val"])
        self.val_set_names = names
        self.pair_metrics = nn.ModuleList([PairVerificationMetrics() for _ in names])

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Margin-head cross-entropy on identity labels; loss and training accuracy are logged."""
        embeddings = self(batch["image"])
        logits = self.head(embeddings, batch["label"])
        loss = F.cross_entropy(logits, batch["label"])
        with torch.no_grad():
            acc = (self.head.cosine(embeddings).argmax(1) == batch["label"]).float().mean()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", acc, on_step=False, on_epoch=True)
        return loss

    def pair_scores(self, batch: dict[str, Tensor]) -> Tensor:
        """Cosine similarity of the two embeddings of each pair, (N,)."""
        emb_a, emb_b = self(batch["image_a"]), self(batch["image_b"])
        return F.cosine_similarity(emb_a, emb_b, dim=1)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        """Feed the pair scores of set ``dataloader_idx`` to its metrics (computed at epoch end)."""
        if dataloader_idx >= len(self.pair_metrics):
            raise ValueError(
                f"validation dataloader {dataloader_idx} has no name; the datamodule names "
                f"{len(self.pair_metrics)} sets: {self.val_set_names}"
            )
        index = batch.get("index")
        self._pair_metrics()[dataloader_idx].update(self.pair_scores(batch), batch["issame"].bool(), index=index)

    def on_validation_epoch_end(self) -> None:
        """Compute and log each set's metrics; a set is computed on every rank or on none.

        ``compute()`` gathers the states across processes (a collective), so whether to call it
        must not depend on what one rank saw: a rank whose share of a set was empty would skip
        the gather the others wait in. The sets updated on *any* rank are agreed on first.
        """
        updated = self._sets_updated_anywhere()
        for name, metric, was_updated in zip(self.val_set_names, self._pair_metrics(), updated, strict=True):
            if was_updated:
                with warnings.catch_warnings():
                    # a rank without pairs of this set computes too (the gather fills it)
                    warnings.filterwarnings("ignore", message="The ``compute`` method of metric", category=UserWarning)
                    values = metric.compute()
                for key, value in values.items():
                    self.log(f"val/{name}/{key}", value, prog_bar=key == "roc_auc", add_dataloader_idx=False)
            metric.reset()

    def _pair_metrics(self) -> list[PairVerificationMetrics]:
        """The per-set metrics with their type (an ``nn.ModuleList`` only promises Modules)."""
        return [cast(PairVerificationMetrics, metric) for metric in self.pair_metrics]

    def _sets_updated_anywhere(self) -> list[bool]:
        """Per validation set, whether any process updated its metric (one all-reduce under DDP)."""
        flags = torch.tensor([m.update_called for m in self._pair_metrics()], dtype=torch.int32, device=self.device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return [bool(f) for f in flags.tolist()]

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        """As validation: the verification sets are the test benchmark too."""
        self.validation_step(batch, batch_idx, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        """Compute and log each set's metrics, as after validation."""
        self.on_validation_epoch_end()

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """L2-normalised embeddings (N, D), ready for cosine comparison."""
        return F.normalize(self(batch["image"]), dim=1)

    def explanation_inputs(self, batch: dict[str, Tensor]) -> tuple[Tensor, Target]:
        """Both sides of each pair, A explained against B's embedding and B against A's."""
        return pair_targets(self.backbone, batch["image_a"], batch["image_b"], mode="similar")


def _pretrained_backbone(
    path: str, options: dict[str, Any] | None, weights: str | None, backbone_kwargs: dict[str, Any] | None
) -> nn.Module:
    """``load_face_model(path, **options)``; timm-only arguments are refused or ignored.

    A second weights file is an error (which one was meant is unknowable); ``backbone_kwargs``
    only warn, so that a config written for a timm backbone (like configs/demo.yaml) can be
    reused with ``--model.pretrained`` alone.
    """
    if weights is not None:
        raise ValueError("pretrained replaces the timm backbone and its weights; drop weights or drop pretrained")
    unknown = sorted(set(options or {}) - set(PRETRAINED_OPTIONS))
    if unknown:
        raise ValueError(f"Unknown pretrained_options {unknown}. Available: {', '.join(PRETRAINED_OPTIONS)}")
    # train mode like a freshly built timm backbone: Lightning keeps each module's mode at fit
    # start, so an eval-mode backbone would be fine-tuned with frozen BatchNorm statistics
    network = load_face_model(path, **(options or {})).train()
    if backbone_kwargs:
        size = face_model_info(network).input_size
        warnings.warn(
            f"backbone_kwargs {backbone_kwargs} are ignored: {path} sets the network ({size} px input)", stacklevel=3
        )
    return network


def _pretrained_width(backbone: nn.Module, requested: int | None, path: str) -> int:
    width = face_model_info(backbone).embedding_size
    if requested is not None and requested != width:
        raise ValueError(
            f"embedding_size={requested} contradicts pretrained {path!r}, which outputs {width}; "
            "omit embedding_size (null)"
        )
    return width


def load_module_checkpoint(path: str | Path) -> pl.LightningModule:
    """Rebuild a facexai module from a Lightning checkpoint (weights_only, no code executed).

    A ``VerificationModule(pretrained=...)`` is rebuilt by re-reading its ``pretrained`` file,
    which must still exist at the recorded path; the checkpoint's weights then replace its own.
    """
    return module_from_checkpoint(read_checkpoint(path), path)


def module_from_checkpoint(checkpoint: object, path: str | Path) -> pl.LightningModule:
    """The module of an already loaded Lightning checkpoint (``path`` only names it in errors)."""
    if not isinstance(checkpoint, dict) or not checkpoint.get("hyper_parameters") or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a facexai Lightning checkpoint (no hyper_parameters/state_dict)")
    hparams = checkpoint["hyper_parameters"]
    cls = VerificationModule if "margin" in hparams else ClassifierModule
    kwargs = {k: v for k, v in hparams.items() if not k.startswith("_")}
    module = cls(**kwargs)
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval()
