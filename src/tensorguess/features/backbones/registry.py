"""One registry mapping a backbone name to an object that answers the same questions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from tensorguess.errors import TensorguessError


class Backbone(Protocol):
    """A frozen, pretrained feature extractor.

    `features` takes a float32 batch [B, image_size, image_size, 3] of RGB pixels in
    [0, 255] and returns [B, feature_dim]; it is traceable inside a `tf.function`, so
    the export can freeze it into a graph.
    """

    name: str
    image_size: int
    feature_dim: int
    cache_key: str

    def preprocess(self, pixels): ...

    def features(self, pixels): ...


_FACTORIES: dict[str, Callable[[int | None], Backbone]] = {}
HUB_PREFIX = "hub:"


def register_backbone(name: str):
    """Register `factory(image_size) -> Backbone` under `name`."""

    def decorate(factory: Callable[[int | None], Backbone]):
        _FACTORIES[name] = factory
        return factory

    return decorate


def backbone_names() -> list[str]:
    """The names `get_backbone` accepts, besides `hub:<handle-or-path>`."""
    return sorted(_FACTORIES)


def get_backbone(spec: str, image_size: int | None = None) -> Backbone:
    """Build the backbone named `spec` (a registered name or `hub:<handle-or-path>`)."""
    if spec.startswith(HUB_PREFIX):
        from tensorguess.features.backbones.hub import HubBackbone

        return HubBackbone(spec[len(HUB_PREFIX) :], image_size)
    if spec not in _FACTORIES:
        known = ", ".join(backbone_names() + [HUB_PREFIX + "<handle-or-path>"])
        raise TensorguessError(f"unknown backbone {spec!r}: choose one of {known}")
    return _FACTORIES[spec](image_size)
