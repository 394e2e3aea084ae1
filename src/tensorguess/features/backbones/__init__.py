"""Backbones: the registry, the embedded EfficientNet-Lite models and TF-Hub SavedModels."""

from tensorguess.features.backbones import efficientnet_lite  # noqa: F401  (registers efficientnet_lite*)
from tensorguess.features.backbones.registry import (
    HUB_PREFIX,
    Backbone,
    backbone_names,
    get_backbone,
    register_backbone,
)

# The default of `train` (training/options.py), and of doctor before any model is trained.
DEFAULT_BACKBONE = "efficientnet_lite2"

__all__ = [
    "DEFAULT_BACKBONE",
    "HUB_PREFIX",
    "Backbone",
    "backbone_names",
    "get_backbone",
    "register_backbone",
]
