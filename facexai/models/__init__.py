"""Backbones (timm + IResNet), margin heads and the Lightning modules."""

from facexai.models.backbones import create_backbone
from facexai.models.face_model import CanonicalInput, FaceModelInfo, InputLayout, load_face_model
from facexai.models.heads import ArcFaceHead, CosFaceHead
from facexai.models.iresnet import IResNet
from facexai.models.modules import ClassifierModule, VerificationModule, load_module_checkpoint

__all__ = [
    "ArcFaceHead",
    "CanonicalInput",
    "ClassifierModule",
    "CosFaceHead",
    "FaceModelInfo",
    "IResNet",
    "InputLayout",
    "VerificationModule",
    "create_backbone",
    "load_face_model",
    "load_module_checkpoint",
]
