"""The frozen blocks' output, stored once: features finished from it are the whole backbone's,
and a training run that fine-tunes decodes each of its training photos once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from helpers import draw_photos, make_tf_files


def test_features_finished_from_stored_boundaries_are_the_whole_backbones(tmp_path):
    """The pretrained top blocks on a photo's stored boundary give the features the whole
    backbone gives it (the cache may hold either); a photo that cannot be read is named,
    not given features."""
    from tensorguess.features.backbones import get_backbone
    from tensorguess.features.bottlenecks import features_runner
    from tensorguess.features.boundaries import (
        FeaturesFromBoundaries,
        bottom_runner,
        store_boundaries,
        top_runner,
    )

    backbone = get_backbone("efficientnet_lite0", 96)
    paths = [*draw_photos(tmp_path, "circle", 5, 1), *draw_photos(tmp_path, "square", 5, 2)]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    paths.insert(3, broken)
    engine = "openvino-f32"
    stored = store_boundaries(
        bottom_runner(backbone, 2, engine), paths, 96, tmp_path / "boundaries.npy"
    )
    assert list(stored.problems) == [3]
    compute = FeaturesFromBoundaries(stored, paths, top_runner(backbone, 2, engine))
    asked = [paths[i] for i in (10, 0, 3, 5)]  # any subset, in any order
    batches = list(compute(backbone, asked, batch_size=3))
    assert [list(indices) for indices, _, _ in batches] == [[0, 1, 2], [3]]
    features = np.concatenate([vectors for _, vectors, _ in batches])
    reasons = [reason for _, _, batch in batches for reason in batch]
    assert [bool(reason) for reason in reasons] == [False, False, True, False]

    from tensorguess.data.images import pixel_batches

    whole, _ = features_runner(backbone, engine)
    pixels = next(pixel_batches([asked[i] for i in (0, 1, 3)], 96, 3))[0]
    expected = whole(pixels)
    found = features[[0, 1, 3]]
    np.testing.assert_allclose(found, expected, atol=1e-4 * np.abs(expected).max())
    assert np.abs(features[0] - features[1]).max() > 1e-2 * np.abs(expected).max()


def test_a_fine_tuning_train_decodes_each_training_photo_once(tmp_path, monkeypatch):
    """Features, fine-tuning and the novelty score all come from one pass of the frozen
    blocks: each training and validation photo is decoded once in the whole run (test
    photos again by the exported model, as guess.sh runs it)."""
    from tensorguess.data import images
    from tensorguess.data.dataset import scan_data
    from tensorguess.training.pipeline import train_classifier
    from tensorguess.training.presets import preset_options

    tf_files = make_tf_files(tmp_path / "tf_files", per_label=12)
    decoded: Counter = Counter()
    load = images.load_pixels

    def counted(path, size):
        decoded[Path(path).name] += 1
        return load(path, size)

    monkeypatch.setattr(images, "load_pixels", counted)
    lines: list[str] = []
    options = preset_options(
        "balanced",
        backbone="efficientnet_lite0",
        image_size=96,
        fine_tune_blocks=2,
        fine_tune_epochs=2,
        validation_percentage=20,
        testing_percentage=20,
        report=False,
    )
    summary = train_classifier(tf_files, options, say=lines.append)
    assert summary.features_computed == 24
    assert any(line.startswith("Fine-tune epoch 2:") for line in lines), lines
    assert any(line.startswith("Novelty threshold") for line in lines), lines
    scan = scan_data(tf_files / "data", 20, 20)
    test_photos = {image.path.name for image in scan.images if image.split == "test"}
    assert len(test_photos) == summary.counts["test"] > 0 and len(decoded) == 24
    for name, count in decoded.items():
        assert count == (2 if name in test_photos else 1), (name, count)
