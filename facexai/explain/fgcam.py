"""FG-CAM: fine-grained CAM (Qiu, Jin, Zhang, AAAI 2024, arXiv 2303.09171).

Paper: "Empowering CAM-Based Methods with Capability to Generate Fine-Grained and
High-Faithfulness Explanations". A CAM method's explanation components I_k = alpha_k * A_k at the
CAM layer are not summed there; they are walked down to a shallower layer (or the input) with
layer-wise relevance propagation ratio rules (Bach et al. 2015; z+ and z^B rules from Montavon
et al. 2019), and summed over channels at that resolution.

Beyond the reference code (github dongmo-qcq/FG-CAM, which supports its own VGG classes at batch
size 1): batched, any device, and any architecture built from convolutions, linear, norm,
activation and pooling layers and residual additions (torchvision/timm ResNets, VGGs, the
IResNet face backbones), because the walk is a modified gradient (see
:mod:`facexai.explain._lrp`) rather than a list of known layers.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from facexai.explain._cam import CAMExplainer, CAMInputs
from facexai.explain._lrp import BN_MISMATCH_SHARE, RelevanceTape, relevance_pass
from facexai.explain._lrp_rules import ZPlusRule, signed_zplus, signed_zplus_any
from facexai.explain.base import float32_forward
from facexai.explain.layers import get_layer
from facexai.explain.registry_instance import register_explainer
from facexai.explain.scorecam import ScoreCAM
from facexai.explain.targets import Target

#: the CAM methods whose components FG-CAM refines
BASES = ("gradcam", "scorecam")
#: fraction of singular triplets kept by the denoising variant (paper and reference: 10 %)
DENOISE_FRACTION = 0.1


class BatchNormMismatchWarning(UserWarning):
    """FG-CAM crossed BatchNorms whose running statistics do not match the activations.

    FG-CAM's ratio rules divide by the pre-activation contributions; with mismatched statistics
    its maps can change completely under imperceptible input changes (docs/explainers.md).
    """


@register_explainer("fgcam")
class FGCAM(CAMExplainer):
    """FG-CAM (arXiv 2303.09171): CAM components refined to ``explain_at``'s resolution.

    1. Components I = alpha_k * A_k (N, C, h, w) at ``target_layer``, alpha from Grad-CAM
       (spatial mean of dS/dA_k) or Score-CAM (softmax over the masked-input score gains).
    2. Optionally denoised (:func:`denoise_components`).
    3. Walked down to ``explain_at`` with ratio rules, biases excluded, 0/0 := 0: element-wise
       layers (BN, ReLU, PReLU, dropout) pass relevance through, max-pool routes it to the
       arg-max, average pools and residual additions share it in proportion to their inputs,
       hidden convolutions use the z+ rule generalised to signed inputs and the convolution
       reading the image the z^B rule with the input's per-sample minimum and maximum.
    4. The raw map is the channel sum at ``explain_at`` (signed); post-processing then applies
       ReLU, upsampling and min-max. Without denoising the map's total equals sum(I).

    Notes:
        - Score-CAM base: the weights are those of facexai's ``"scorecam"`` (softmax over
          channels of S(x * H_k) - S(0)); the reference code instead uses the raw softmax class
          probability of each masked image.
        - Denoised components where A = 0 carry nothing down (they have no input to go to); the
          reference drops them the same way in its first (max-pool) rule.
        - A layer inside one branch of a residual block receives only that branch's share; pick
          a block output to see the whole relevance.
        - Layers the rules do not know (gating products such as squeeze-excitation,
          weight-standardised convolutions) keep their ordinary gradient x input.
        - The ratio rules divide by contributions that can nearly cancel; with BatchNorm running
          statistics that do not match the activations (a seeded network, inputs normalised
          unlike in training) maps can change completely under 1e-6 input changes. The walk
          checks the statistics of every BatchNorm it crosses and warns
          (:class:`BatchNormMismatchWarning`); see docs/explainers.md for the measurements.

    Args:
        target_layer: dotted name of the CAM layer; ``None`` picks the last feature layer.
        base: "gradcam" or "scorecam".
        denoise: keep only the top 10 % singular triplets of the centred components.
        explain_at: "input", or the dotted name of a layer between the input and
            ``target_layer`` whose *output* receives the map.
    """

    not_exportable = None

    def __init__(
        self,
        target_layer: str | None = None,
        base: str = "gradcam",
        denoise: bool = False,
        explain_at: str = "input",
    ) -> None:
        super().__init__(target_layer)
        if base not in BASES:
            raise ValueError(f"Unknown FG-CAM base {base!r}. Available: {', '.join(BASES)}")
        if not isinstance(denoise, bool):
            raise TypeError(f"denoise must be True or False, got {denoise!r}")
        if not isinstance(explain_at, str) or not explain_at:
            raise TypeError(f"explain_at must be 'input' or a dotted module name, got {explain_at!r}")
        self.base = base
        self.denoise = denoise
        self.explain_at = explain_at

    def export_refusal(self) -> str | None:
        """The Grad-CAM base without denoising exports; the other options have no ONNX form."""
        if self.base != "gradcam":
            return f"with base={self.base!r}, {ScoreCAM.not_exportable}; use base='gradcam'"
        if self.denoise:
            return "with denoise=True: ONNX has no SVD operator"
        return None

    @property
    def needs_gradients(self) -> bool:  # type: ignore[override]
        """Only the Grad-CAM base needs dS/dA."""
        return self.base == "gradcam"

    def explain(self, model: nn.Module, images: Tensor, target: Target) -> Tensor:
        """Raw FG-CAM maps (N, h, w) at ``explain_at``'s resolution (steps 1-4 above)."""
        return self.refined_map(model, images, target, signed_zplus)

    def explain_for_tracing(self, model: nn.Module, images: Tensor, target: Target) -> Tensor:
        """:meth:`explain` with the branch-free signed z+ rule, which the ONNX export can trace.

        :func:`~facexai.explain._lrp_rules.signed_zplus` skips ``layer(x-, W-)`` when all inputs
        are non-negative, where that term is zero (biases are excluded), so the branch-free
        :func:`~facexai.explain._lrp_rules.signed_zplus_any` gives the same maps for every
        input, up to float rounding.
        """
        return self.refined_map(model, images, target, signed_zplus_any)

    def refined_map(self, model: nn.Module, images: Tensor, target: Target, zplus: ZPlusRule) -> Tensor:
        """The channel sum of the components walked down with ``zplus`` for hidden linear layers."""
        cam_layer = self.layer_name(model, images)
        explain_at = self._explain_at_layer(model)
        images = images.detach().requires_grad_(explain_at is None)
        with relevance_pass(model, images, cam_layer, explain_at, zplus) as tape:
            output = float32_forward(model, images)
        activations, cam_leaf = tape.recorded()
        gradients = None
        if self.needs_gradients:
            (gradients,) = torch.autograd.grad(target(output).sum(), cam_leaf)
        activations = activations.detach()
        weights = self.channel_weights(CAMInputs(model, images.detach(), target, activations, gradients))
        components = weights[:, :, None, None] * activations
        if self.denoise:
            components = denoise_components(components)
        warn_batchnorm_mismatch(tape)
        return tape.relevance(components).sum(dim=1)

    def channel_weights(self, inputs: CAMInputs) -> Tensor:
        """Alpha (N, C): Grad-CAM's mean gradients, or the weights of facexai's "scorecam"."""
        if self.base == "gradcam":
            return inputs.require_gradients().mean(dim=(2, 3))
        return ScoreCAM(self.target_layer).channel_weights(inputs)

    def _explain_at_layer(self, model: nn.Module) -> str | None:
        """None for the input, else the validated layer name (errors list close matches)."""
        if self.explain_at == "input":
            return None
        try:
            get_layer(model, self.explain_at)
        except ValueError as err:
            raise ValueError(f"explain_at: {err} Use 'input' for the input image.") from None
        return self.explain_at


def warn_batchnorm_mismatch(tape: RelevanceTape) -> None:
    """One :class:`BatchNormMismatchWarning` per call when too many BN channels mismatch.

    The share is over all channels of the BatchNorms between ``explain_at`` and the CAM layer
    (a converted ONNX graph keeps only the BatchNorms that do not follow a convolution).
    """
    share, channels = tape.mismatch_share()
    if channels == 0 or share <= BN_MISMATCH_SHARE:
        return
    warnings.warn(
        f"FG-CAM: {share:.0%} of {channels} BatchNorm channels on the relevance walk have running "
        "statistics that do not match this batch's activations (mean off by more than one "
        "running std, or variance off by more than 4x). FG-CAM's ratio rules then divide by "
        "near-cancelling contributions and its maps can change completely under imperceptible "
        "input changes. Use a trained model (or calibrate BatchNorm statistics on data, "
        "e.g. a few train-mode forward passes with momentum=None) and feed inputs normalised "
        "as in training (Grad-CAM, which uses plain gradients, is not affected)",
        BatchNormMismatchWarning,
        stacklevel=5,  # the caller of Explainer.__call__ (via explain and refined_map)
    )


def denoise_components(components: Tensor, fraction: float = DENOISE_FRACTION) -> Tensor:
    """FG-CAM's denoising: a low-rank approximation of each sample's centred components.

    Per sample, I is reshaped to (C, h*w), each channel's spatial mean is subtracted, and only
    the top ``int(fraction * h * w)`` singular triplets are kept (4 of 49 for a 7x7 map; never
    more than the min(C, h*w) that exist); the means are not added back. Fewer than 10 positions
    keep nothing, so the map is empty.

    Args:
        components: (N, C, h, w).
        fraction: share of the h * w possible singular triplets that is kept.

    Returns:
        The denoised components, same shape.
    """
    n, c, h, w = components.shape
    matrix = components.reshape(n, c, h * w)
    matrix = matrix - matrix.mean(dim=2, keepdim=True)
    rank = min(int(fraction * h * w), c, h * w)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    low_rank = (u[:, :, :rank] * s[:, None, :rank]) @ vh[:, :rank, :]
    return low_rank.reshape(n, c, h, w)
