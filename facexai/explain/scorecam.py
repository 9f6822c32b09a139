"""Score-CAM (Wang, Wang, Du, Yang, Zhang, Ding, Mardziel & Hu, CVPRW 2020, arXiv 1910.01279)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facexai.explain._cam import CAMExplainer, CAMInputs
from facexai.explain.base import check_positive, minmax
from facexai.explain.registry_instance import register_explainer
from facexai.explain.targets import Target


@register_explainer("scorecam")
class ScoreCAM(CAMExplainer):
    """Score-CAM: channel weights from the score of the input masked by each activation map.

    For every channel k, A_k is upsampled (bilinear, ``align_corners=False``) to the input size
    and min-max normalised to a mask H_k in [0, 1]; the channel's "increase of confidence" is
    C_k = S(x * H_k) - S(x_b) with the baseline image x_b = 0 (the input masked by an all-zero
    mask); the weights are softmax_k(C_k) (the paper's Eq. 8). Since the softmax is
    shift-invariant, the baseline term cancels exactly; it is kept so that the code reads like
    the paper. S is the target's score: the raw logit of a class, or the (1 -) cosine
    similarity of a face to its partner.

    Gradient-free: the N x C masked images are scored with forward passes only, ``batch_size``
    images per forward, so memory stays bounded for wide layers (512 channels in a ResNet).
    Chunking does not change the result.

    Args:
        target_layer: dotted module name of the CAM layer; ``None`` picks the last feature layer.
        batch_size: number of masked images per forward pass.
    """

    needs_gradients = False
    not_exportable = "it scores the masked images in a Python loop whose length depends on the batch size"

    def __init__(self, target_layer: str | None = None, batch_size: int = 64) -> None:
        super().__init__(target_layer)
        check_positive("batch_size", batch_size, integer=True)
        self.batch_size = batch_size

    def channel_weights(self, inputs: CAMInputs) -> Tensor:
        """softmax_k(S(x * H_k) - S(0)) (N, C), scored ``batch_size`` masked images at a time."""
        model, images, target, activations = inputs.model, inputs.images, inputs.target, inputs.activations
        n, c = activations.shape[:2]
        with torch.no_grad():
            baseline = target(model(torch.zeros_like(images)))
            scores = torch.cat(
                [
                    self._masked_scores(model, images, target, activations, rows)
                    for rows in torch.arange(n * c, device=images.device).split(self.batch_size)
                ]
            )
        return torch.softmax(scores.view(n, c) - baseline[:, None], dim=1)

    def _masked_scores(
        self, model: nn.Module, images: Tensor, target: Target, activations: Tensor, rows: Tensor
    ) -> Tensor:
        """Scores of the masked images for the flat (sample, channel) indices ``rows``."""
        sample, channel = rows // activations.shape[1], rows % activations.shape[1]
        maps = activations[sample, channel][:, None]
        masks = F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)
        masks = minmax(masks[:, 0])[:, None]
        return target.select(sample)(model(images[sample] * masks))
