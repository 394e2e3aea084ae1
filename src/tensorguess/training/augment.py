"""Distortions (retrain.py's flip, crop, scale, brightness) and their cached feature views.

Distorting every photo at every step would mean running the backbone at every step. Instead
each training photo gets a few distorted copies whose features are computed once and cached
beside the plain ones (`bottlenecks/<features key>/distorted-<settings>-<n>/`), keyed by
the photo's content like any bottleneck; training then draws among the cached views. The
pixels are distorted before the network, which then runs on the same engine, in the same
precision, as for the plain features: a training set never mixes precisions. A view's
random draw is seeded by the photo's pixels and the view's number, so a cold and a warm
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

from tensorguess.features.backbones import Backbone
from tensorguess.features.bottlenecks import ComputeFeatures, cached_features
from tensorguess.features.engines.int8 import Calibration
from tensorguess.training.options import DistortionOptions


def view_cache_name(distortions: DistortionOptions, view: int) -> str:
    """The cache folder of one view: changing any distortion setting starts new views."""
    settings = {key: value for key, value in asdict(distortions).items() if key != "views"}
    tag = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    return f"distorted-{tag}-{view}"


def describe_views(distortions: DistortionOptions) -> str:
    """The cached views in words, for the training log."""
    return f"{distortions.views} distorted views per photo ({distortions.settings()})"


def distort(pixels, seeds, distortions: DistortionOptions, image_size: int):
    """Float pixels [B, S, S, 3] in 0-255 -> one random distortion of each, same shape.

    `seeds` [B, 2] int64 makes each image's draw reproducible. As in retrain.py, the photo is
    scaled up by (1 + crop) * (1 + uniform(0, scale)) and a window of the input size is cut
    at a random place (here as one crop-and-resize), then maybe mirrored, then brightened or
    darkened by up to `random_brightness` percent.
    """
    import tensorflow as tf

    def uniform(offset: int, low: float, high: float):
        return _uniform(seeds, offset, low, high)

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


def trivial_augment(pixels, seeds):
    """TrivialAugment (Mueller and Hutter, 2021): float pixels [B, S, S, 3] in 0-255 -> each
    changed by one operation drawn at random, at a strength drawn at random; same shape.

    The 13 operations: none, shear or translation along either axis, rotation, brightness,
    colour, contrast, sharpness, posterize, solarize, autocontrast, with RandAugment's
    ranges (shear 0.3, translation 30% of the side, rotation 30 degrees, the enhancements
    0.1-1.9 times). Uncovered corners are grey. `seeds` [B, 2] int64 makes each image's
    draw reproducible. Fine-tuning learns from it (`--fine_tune_augment trivial`).
    """
    import tensorflow as tf

    def uniform(offset: int):
        return _uniform(seeds, offset, 0.0, 1.0)

    count = tf.shape(pixels)[0]
    size = tf.cast(tf.shape(pixels)[1], tf.float32)
    operation = tf.cast(uniform(11) * 13, tf.int32)
    strength = uniform(12) * tf.where(uniform(13) < 0.5, -1.0, 1.0)  # -1 to 1
    # Each operation runs on the photos that drew it only: a thirteenth of the batch each.
    photos = tf.dynamic_partition(pixels, operation, 13)
    strengths = tf.dynamic_partition(strength, operation, 13)
    places = tf.dynamic_partition(tf.range(count), operation, 13)
    changed = [
        _trivial_operation(number, part, part_strength, size)
        for number, (part, part_strength) in enumerate(zip(photos, strengths, strict=True))
    ]
    return tf.clip_by_value(tf.dynamic_stitch(places, changed), 0, 255)


def _trivial_operation(number: int, pixels, strength, size):
    """TrivialAugment's operation `number` (0-12, as `trivial_augment` lists them) on float
    pixels [b, S, S, 3], each photo at its `strength` [b] from -1 to 1."""
    import tensorflow as tf

    if number == 0:
        return pixels
    if number <= 5:  # geometric: one projective transform each, corners grey
        zero, one = tf.zeros_like(strength), tf.ones_like(strength)
        shear, shift = 0.3 * strength, 0.3 * size * strength
        angle, middle = np.radians(30) * strength, size / 2
        cos, sin = tf.cos(angle), tf.sin(angle)
        row = {
            1: [one, shear, zero, zero, one, zero],
            2: [one, zero, zero, shear, one, zero],
            3: [one, zero, shift, zero, one, zero],
            4: [one, zero, zero, zero, one, shift],
            5: [cos, -sin, middle * (1 - cos + sin), sin, cos, middle * (1 - sin - cos)],
        }[number]
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=pixels,
            transforms=tf.stack([*row, zero, zero], 1),
            output_shape=tf.shape(pixels)[1:3],
            fill_value=128.0,
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )
    # The photometric operations, most of them a blend with a degenerate version of the photo.
    factor = (1 + 0.9 * strength)[:, None, None, None]
    if number == 6:  # brightness
        return pixels * factor
    if number == 7:  # colour
        gray = tf.image.rgb_to_grayscale(pixels)
        return gray + factor * (pixels - gray)
    if number == 8:  # contrast
        mean = tf.reduce_mean(tf.image.rgb_to_grayscale(pixels), axis=[1, 2, 3], keepdims=True)
        return mean + factor * (pixels - mean)
    if number == 9:  # sharpness
        kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13
        blurred = tf.nn.depthwise_conv2d(
            pixels, tf.tile(kernel[:, :, None, None], [1, 1, 3, 1]), [1, 1, 1, 1], "SAME"
        )
        return blurred + factor * (pixels - blurred)
    if number == 10:  # posterize: 8 to 4 bits
        step = (2.0 ** tf.round(tf.abs(strength) * 4))[:, None, None, None]
        return tf.floor(pixels / step) * step
    if number == 11:  # solarize
        threshold = (256 * (1 - tf.abs(strength)))[:, None, None, None]
        return tf.where(pixels >= threshold, 255 - pixels, pixels)
    low = tf.reduce_min(pixels, axis=[1, 2], keepdims=True)  # autocontrast
    high = tf.reduce_max(pixels, axis=[1, 2], keepdims=True)
    return (pixels - low) * 255 / tf.maximum(high - low, 1)


def _uniform(seeds, offset: int, low: float, high: float):
    """One number from `low` to `high` per image, drawn from its seed [2] plus `offset`."""
    import tensorflow as tf

    return tf.map_fn(
        lambda seed: tf.random.stateless_uniform([], seed + offset, low, high),
        seeds,
        fn_output_signature=tf.float32,
    )


def pixel_seeds(pixels, variant: int):
    """[B, 2] int64 seeds from each image's pixels and the variant number."""
    import tensorflow as tf

    flat = tf.reshape(tf.cast(pixels, tf.int64), [tf.shape(pixels)[0], -1])
    # A position-dependent weighting, so that two different photos rarely share a seed.
    weights = tf.range(tf.shape(flat)[1], dtype=tf.int64) % 251 + 1
    checksum = tf.reduce_sum(flat * weights, axis=1) % (2**31 - 1)
    return tf.stack([checksum, tf.fill(tf.shape(checksum), tf.cast(variant, tf.int64))], axis=1)


class DistortedView:
    """One distorted view of each photo: uint8 pixels in, the same pixels distorted out."""

    def __init__(self, distortions: DistortionOptions, view: int, image_size: int):
        self.distortions = distortions
        self.view = view
        self.image_size = image_size
        self.cache_name = view_cache_name(distortions, view)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """Distort a batch [B, S, S, 3] of uint8 pixels."""
        import tensorflow as tf

        floats = tf.cast(pixels, tf.float32)
        seeds = pixel_seeds(floats, self.view)
        distorted = distort(floats, seeds, self.distortions, self.image_size)
        return np.round(distorted.numpy()).astype(np.uint8)


@dataclass
class Views:
    """Features of each photo's distorted views, [views, N, D], and where they came from."""

    vectors: np.ndarray
    computed: int
    cached: int


def distorted_features(
    backbone: Backbone,
    paths: Sequence[Path],
    cache_root: Path,
    distortions: DistortionOptions,
    digests: Sequence[str | None] | None = None,
    engine: str | None = None,
    compute: ComputeFeatures | None = None,
    calibration: Calibration | None = None,
) -> Views:
    """The distorted views of `paths`, from the cache where present, computed otherwise.

    They are computed by the same `engine` (and int8 `calibration`) as the plain features,
    so a training set never mixes precisions. A file that fails here failed for the plain
    features too, so it is not among `paths`; should it fail anyway (changed since), its
    rows stay zero.
    """
    vectors = np.zeros((distortions.views, len(paths), backbone.feature_dim), np.float32)
    computed = cached = 0
    for view in range(1, distortions.views + 1):
        features = cached_features(
            backbone,
            paths,
            cache_root,
            digests=digests,
            engine=engine,
            view=DistortedView(distortions, view, backbone.image_size),
            compute=compute,
            calibration=calibration,
        )
        vectors[view - 1] = features.vectors
        computed += features.computed
        cached += features.cached
    return Views(vectors, computed, cached)
