"""The embedded EfficientNet-Lite backbones and the torch weights reader behind them."""

from __future__ import annotations

import os
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from skimage import data

from tensorguess.errors import TensorguessError
from tensorguess.features.backbones import backbone_names, efficientnet_lite, get_backbone
from tensorguess.features.backbones.efficientnet_lite import EfficientNetLite, weights_file
from tensorguess.features.backbones.torch_weights import (
    LEGACY_MAGIC_NUMBER,
    LEGACY_PROTOCOL_VERSION,
    read_state_dict,
)

# ImageNet classes of scikit-image's chelsea, coffee and rocket photos: Egyptian cat,
# espresso, missile.
SAMPLE_CLASSES = [285, 967, 657]
OTHER_VARIANTS = [name for name in efficientnet_lite.VARIANTS if name != "efficientnet_lite0"]


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLite:
    return get_backbone("efficientnet_lite0")


def sample_photos(size: int) -> np.ndarray:
    """Chelsea, coffee and rocket as float32 pixels, resized bilinearly to `size`."""
    photos = (data.chelsea(), data.coffee(), data.rocket())
    resized = [
        np.asarray(Image.fromarray(photo).resize((size, size), Image.Resampling.BILINEAR))
        for photo in photos
    ]
    return np.stack(resized).astype(np.float32)


def random_pixels(size: int, count: int = 2) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


def test_the_embedded_variants_are_registered():
    assert {"efficientnet_lite0", *OTHER_VARIANTS} <= set(backbone_names())


def test_lite0_recognises_the_sample_photos(lite0):
    assert (lite0.name, lite0.image_size, lite0.feature_dim) == ("efficientnet_lite0", 224, 1280)
    scores = lite0.imagenet_classifier()(lite0.preprocess(sample_photos(224))).numpy()
    assert scores.argmax(axis=1).tolist() == SAMPLE_CLASSES
    # About 0.80 and 0.86 with a correct conversion; a wrong padding or epsilon drops them.
    assert scores[0, 285] > 0.6
    assert scores[1, 967] > 0.6


@pytest.mark.parametrize("name", OTHER_VARIANTS)
def test_other_variants_recognise_the_sample_photos(name):
    backbone = get_backbone(name)
    scores = backbone.imagenet_classifier()(backbone.preprocess(sample_photos(backbone.image_size)))
    assert scores.numpy().argmax(axis=1).tolist() == SAMPLE_CLASSES


def test_features_work_inside_a_tf_function(lite0):
    features = tf.function(lite0.features)(tf.constant(random_pixels(224)))
    assert features.shape == (2, 1280)
    np.testing.assert_allclose(features.numpy(), lite0.features(random_pixels(224)), atol=1e-5)


# Keras 3.15 saving calls np.array on TF variables, which numpy 2 warns about; not our code.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept:DeprecationWarning")
def test_a_saved_model_reloads_without_custom_objects(lite0, tmp_path):
    import keras

    lite0.model.save(tmp_path / "lite0.keras")
    reloaded = keras.saving.load_model(tmp_path / "lite0.keras")
    pixels = lite0.preprocess(random_pixels(224))
    np.testing.assert_allclose(reloaded(pixels), lite0.model(pixels), atol=1e-5)


def test_image_size_overrides_the_default_and_changes_the_cache_key(lite0):
    smaller = get_backbone("efficientnet_lite0", image_size=192)
    assert smaller.image_size == 192
    assert smaller.model.input_shape == (None, 192, 192, 3)
    assert smaller.cache_key != lite0.cache_key
    assert smaller.features(random_pixels(192)).shape == (2, 1280)


def test_too_small_an_image_size_is_refused():
    with pytest.raises(TensorguessError, match="at least 32"):
        get_backbone("efficientnet_lite0", image_size=8)


def test_second_build_loads_from_the_cache_with_identical_features(lite0, monkeypatch):
    # The session's cache already holds the conversion lite0 made.
    first = lite0
    assert list((efficientnet_lite.backbone_cache_directory()).glob("efficientnet_lite0-*.npz"))

    def no_conversion(path):
        raise AssertionError("converted again instead of using the cache")

    monkeypatch.setattr(efficientnet_lite, "read_state_dict", no_conversion)
    second = EfficientNetLite("efficientnet_lite0")
    pixels = random_pixels(224)
    np.testing.assert_array_equal(first.features(pixels), second.features(pixels))


def test_a_corrupt_cache_file_is_rebuilt(lite0, tmp_path, monkeypatch):
    first = lite0
    (session,) = efficientnet_lite.backbone_cache_directory().glob("efficientnet_lite0-*.npz")
    good = session.read_bytes()
    monkeypatch.setenv("TENSORGUESS_CACHE_DIR", str(tmp_path))
    cached = efficientnet_lite.backbone_cache_directory() / session.name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(good[: len(good) // 2])

    again = EfficientNetLite("efficientnet_lite0")
    pixels = random_pixels(224)
    np.testing.assert_array_equal(first.features(pixels), again.features(pixels))
    assert cached.read_bytes() == good


# The torch weights reader --------------------------------------------------------------


class _Storage:
    """A flat storage, written as a persistent id and then as raw data after the pickles."""

    def __init__(self, key: str, values: np.ndarray) -> None:
        self.key, self.values = key, values


class _Tensor:
    def __init__(self, storage, offset, size, stride, rebuild) -> None:
        self.arguments = (storage, offset, size, stride, False, OrderedDict())
        self.rebuild = rebuild

    def __reduce__(self):
        return (self.rebuild, self.arguments)


class _RunsACommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.fixture
def fake_torch(monkeypatch):
    """Just enough of a `torch` module for pickle to name its globals, as torch.save does."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*arguments):
        raise AssertionError("only ever pickled by name")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    storage_type = type("FloatStorage", (), {"__module__": "torch"})
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils, torch.FloatStorage = utils, storage_type
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def write_legacy_file(path: Path, state, storages: list[_Storage], torch=None) -> Path:
    """Write `state` as torch.save did before 1.6 (legacy format)."""

    class LegacyPickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", torch.FloatStorage, obj.key, "cpu", obj.values.size, None)
            return None

    system = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}
    with open(path, "wb") as stream:
        for header in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, system):
            pickle.dump(header, stream, protocol=2)
        LegacyPickler(stream, protocol=2).dump(state)
        pickle.dump([storage.key for storage in storages], stream, protocol=2)
        for storage in storages:
            stream.write(np.int64(storage.values.size).tobytes())
            stream.write(storage.values.astype("<f4").tobytes())
    return path


def test_reads_a_strided_tensor_from_a_legacy_file(tmp_path, fake_torch):
    storage = _Storage("0", np.arange(6, dtype=np.float32))
    transposed = _Tensor(storage, 0, (3, 2), (1, 3), fake_torch._utils._rebuild_tensor_v2)
    tail = _Tensor(storage, 4, (2,), (1,), fake_torch._utils._rebuild_tensor_v2)
    path = write_legacy_file(
        tmp_path / "small.pth", OrderedDict(t=transposed, tail=tail), [storage], fake_torch
    )
    state = read_state_dict(path)
    np.testing.assert_array_equal(state["t"], np.arange(6).reshape(2, 3).T)
    np.testing.assert_array_equal(state["tail"], [4, 5])


def test_a_tensor_reaching_past_its_storage_is_refused(tmp_path, fake_torch):
    storage = _Storage("0", np.arange(6, dtype=np.float32))
    too_long = _Tensor(storage, 2, (3, 2), (2, 1), fake_torch._utils._rebuild_tensor_v2)
    path = write_legacy_file(tmp_path / "bad.pth", {"t": too_long}, [storage], fake_torch)
    with pytest.raises(TensorguessError, match="past the end"):
        read_state_dict(path)


def test_refuses_any_other_global_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    path = write_legacy_file(
        tmp_path / "evil.pth", {"weight": _RunsACommand(f"touch {marker}")}, []
    )
    with pytest.raises(TensorguessError, match=r"evil\.pth.*refuses to load global .*system"):
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("kept", [10, 100, 20_000, -1000])
def test_a_truncated_weights_file_is_refused(tmp_path, kept):
    whole = weights_file("efficientnet_lite0").read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(whole[:kept])
    with pytest.raises(TensorguessError, match=r"truncated\.pth"):
        read_state_dict(path)


def test_a_missing_weights_file_is_refused(tmp_path):
    with pytest.raises(TensorguessError, match=r"absent\.pth: cannot read"):
        read_state_dict(tmp_path / "absent.pth")
