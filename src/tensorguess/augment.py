"""Distortions (retrain.py's flip, crop, scale, brightness) and their cached feature variants.

Distorting every photo at every step would mean running the backbone at every step. Instead
each training photo gets a few distorted copies whose features are computed once and cached
beside the plain ones (`bottlenecks/<backbone>/distorted-<settings>-<n>/`), keyed by the
photo's content like any bottleneck; training then draws among the cached views. A view's
random draw is seeded by the photo's pixels and the variant number, so a cold and a warm
cache give the same features. Fine-tuning, which cannot use the cache, distorts each photo
afresh at every step with the same `distort`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tensorguess.backbones import Backbone
from tensorguess.bottlenecks import cached_features


@dataclass(frozen=True)
class Distortions:
    """How much to distort a photo (retrain.py's flags: off unless set) and how many views.

    `variants` is how many distorted views of each photo the head learns from, once any
    distortion is set.
    """

    variants: int = 0
    flip_left_right: bool = False
    random_crop: float = 0
    random_scale: float = 0
    random_brightness: float = 0

    @property
    def enabled(self) -> bool:
        """Whether distorted views are cached and used to train the head."""
        return self.variants > 0 and self.distorts

    @property
    def distorts(self) -> bool:
        """Whether a distorted photo can differ from the photo at all (fine-tuning's test)."""
        return self.flip_left_right or any(
            (self.random_crop, self.random_scale, self.random_brightness)
        )

    def cache_name(self, variant: int) -> str:
        """The cache folder of one variant: changing any setting starts new views."""
        settings = {key: value for key, value in asdict(self).items() if key != "variants"}
        tag = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
        return f"distorted-{tag}-{variant}"

    def settings(self) -> str:
        """The distortions in words, for the training log: "flip, crop 10%"."""
        parts = ["flip"] if self.flip_left_right else []
        parts += [
            f"{name} {value:g}%"
            for name, value in (
                ("crop", self.random_crop),
                ("scale", self.random_scale),
                ("brightness", self.random_brightness),
            )
            if value
        ]
        return ", ".join(parts) or "none"

    def describe(self) -> str:
        """The cached views in words, for the training log."""
        return f"{self.variants} distorted views per photo ({self.settings()})"


def distort(pixels, seeds, distortions: Distortions, image_size: int):
    """Float pixels [B, S, S, 3] in 0-255 -> one random distortion of each, same shape.

    `seeds` [B, 2] int64 makes each image's draw reproducible. As in retrain.py, the photo is
    scaled up by (1 + crop) * (1 + uniform(0, scale)) and a window of the input size is cut
    at a random place (here as one crop-and-resize), then maybe mirrored, then brightened or
    darkened by up to `random_brightness` percent.
    """
    import tensorflow as tf

    def uniform(offset: int, low: float, high: float):
        return tf.map_fn(
            lambda seed: tf.random.stateless_uniform([], seed + offset, low, high),
            seeds,
            fn_output_signature=tf.float32,
        )

    scale = (1 + distortions.random_crop / 100) * uniform(1, 1, 1 + distortions.random_scale / 100)
    window = 1 / scale
    top = uniform(2, 0, 1) * (1 - window)
    left = uniform(3, 0, 1) * (1 - window)
    bottom, right = top + window, left + window
    if distortions.flip_left_right:
        # crop_and_resize mirrors a box whose x1 > x2.
        mirrored = uniform(4, 0, 1) < 0.5
        left, right = tf.where(mirrored, right, left), tf.where(mirrored, left, right)
    boxes = tf.stack([top, left, bottom, right], axis=1)
    indices = tf.range(tf.shape(pixels)[0])
    distorted = tf.image.crop_and_resize(pixels, boxes, indices, [image_size, image_size])
    brightness = distortions.random_brightness / 100
    factor = uniform(5, 1 - brightness, 1 + brightness)
    return tf.clip_by_value(distorted * factor[:, None, None, None], 0, 255)


def pixel_seeds(pixels, variant: int):
    """[B, 2] int64 seeds from each image's pixels and the variant number."""
    import tensorflow as tf

    flat = tf.reshape(tf.cast(pixels, tf.int64), [tf.shape(pixels)[0], -1])
    # A position-dependent weighting, so that two different photos rarely share a seed.
    weights = tf.range(tf.shape(flat)[1], dtype=tf.int64) % 251 + 1
    checksum = tf.reduce_sum(flat * weights, axis=1) % (2**31 - 1)
    return tf.stack([checksum, tf.fill(tf.shape(checksum), tf.cast(variant, tf.int64))], axis=1)


class DistortedView:
    """A backbone that sees one distorted variant of each photo; only for computing features."""

    def __init__(self, backbone: Backbone, distortions: Distortions, variant: int):
        self.backbone = backbone
        self.distortions = distortions
        self.variant = variant
        self.name = backbone.name
        self.image_size = backbone.image_size
        self.feature_dim = backbone.feature_dim
        self.cache_key = f"{backbone.cache_key}/{distortions.cache_name(variant)}"

    def preprocess(self, pixels):
        """The backbone's own preprocessing."""
        return self.backbone.preprocess(pixels)

    def features(self, pixels):
        """Features of the distorted pixels."""
        seeds = pixel_seeds(pixels, self.variant)
        distorted = distort(pixels, seeds, self.distortions, self.image_size)
        return self.backbone.features(distorted)


@dataclass
class Views:
    """Features of each photo's distorted views, [variants, N, D], and where they came from."""

    vectors: np.ndarray
    computed: int
    cached: int


def distorted_features(
    backbone: Backbone,
    paths: Sequence[Path],
    cache_root: Path,
    distortions: Distortions,
    digests: Sequence[str | None] | None = None,
) -> Views:
    """The distorted views of `paths`, from the cache where present, computed otherwise.

    A file that fails here failed for the plain features too, so it is not among `paths`;
    should it fail anyway (changed since), its rows stay zero.
    """
    import tensorflow as tf

    vectors = np.zeros((distortions.variants, len(paths), backbone.feature_dim), np.float32)
    computed = cached = 0
    # Each view is a new function to trace, by design; TensorFlow would warn of "excessive
    # retracing" from the fifth on, in a message that reads like a fault.
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        for variant in range(1, distortions.variants + 1):
            view = DistortedView(backbone, distortions, variant)
            features = cached_features(view, paths, cache_root, digests=digests)
            vectors[variant - 1] = features.vectors
            computed += features.computed
            cached += features.cached
    finally:
        logger.setLevel(level)
    return Views(vectors, computed, cached)
