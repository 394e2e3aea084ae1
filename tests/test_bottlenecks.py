"""The feature cache: its key names everything that shapes a feature, so nothing stale serves."""

from __future__ import annotations

import numpy as np

from helpers import draw_photos
from tensorguess.data import images
from tensorguess.features import bottlenecks
from tensorguess.features.backbones import efficientnet_lite, get_backbone
from tensorguess.features.bottlenecks import cached_features, features_key


def test_a_new_conversion_or_decoder_gives_new_features(monkeypatch):
    lite0 = get_backbone("efficientnet_lite0")
    before = {engine: features_key(lite0, engine) for engine in ("tensorflow", "openvino")}

    # A new conversion of the weights: the backbone's key changes, and with it every
    # features key and the converted OpenVINO model's key (which is built from it).
    monkeypatch.setattr(efficientnet_lite, "CONVERSION_VERSION", 99)
    monkeypatch.setattr(
        efficientnet_lite, "_converted_model", lambda *_: (lite0.model, lite0._imagenet_head)
    )
    reconverted = efficientnet_lite.EfficientNetLite("efficientnet_lite0")
    assert reconverted.cache_key != lite0.cache_key
    for engine, key in before.items():
        assert features_key(reconverted, engine) != key

    # A new decoder: the same backbone's features are filed anew.
    monkeypatch.setattr(bottlenecks, "DECODER_VERSION", images.DECODER_VERSION + 1)
    for engine, key in before.items():
        assert features_key(lite0, engine) != key
    # The size is part of the key too.
    assert get_backbone("efficientnet_lite0", 192).cache_key != lite0.cache_key


def test_identical_photos_share_one_computation_and_say_so(tmp_path):
    lite0 = get_backbone("efficientnet_lite0")
    (photo,) = draw_photos(tmp_path / "photos", "circle", 1, seed=3)
    copies = [photo]
    for number in range(2):
        copies.append(tmp_path / "photos" / f"copy{number}.jpg")
        copies[-1].write_bytes(photo.read_bytes())
    features = cached_features(lite0, copies, tmp_path / "cache")
    assert (features.computed, features.cached, features.shared) == (1, 0, 2)
    assert features.describe() == "1 computed, 0 from cache, 2 identical photos shared them"
    np.testing.assert_array_equal(features.vectors[0], features.vectors[2])
