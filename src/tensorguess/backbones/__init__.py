"""Backbones: the registry, the embedded EfficientNet-Lite models and TF-Hub SavedModels."""

from tensorguess.backbones import efficientnet_lite  # noqa: F401  (registers efficientnet_lite*)
from tensorguess.backbones.registry import (
    HUB_PREFIX,
    Backbone,
    backbone_names,
    get_backbone,
    register_backbone,
)

DEFAULT_BACKBONE = "efficientnet_lite0"

__all__ = [
    "DEFAULT_BACKBONE",
    "HUB_PREFIX",
    "Backbone",
    "backbone_names",
    "get_backbone",
    "register_backbone",
]
