"""Fine-tuning on several devices (MirroredStrategy lands where one device does), from
stored boundaries, with mixup, and on TensorFlow's oneDNN kernels.

TensorFlow's devices and kernels are fixed when it starts, so those checks run in a
subprocess (the device comparison splits the CPU into two logical devices first).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from helpers import ROOT, run

MIRRORED = """
import json, sys
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

sys.path.insert(0, sys.argv[2])
from helpers import draw_photos
from pathlib import Path
from tensorguess.features.backbones import get_backbone
from tensorguess.training.fine_tune import LabelledPaths, fine_tune
from tensorguess.training.head import SplitData, train_head
from tensorguess.data.images import pixel_batches
from tensorguess.training.options import DistortionOptions, FineTuneOptions, HeadOptions

folder = Path(sys.argv[1])
backbone = get_backbone("efficientnet_lite0", 64)
splits = {}
for name, count, seed in (("train", 16, 1), ("validation", 6, 2), ("test", 6, 3)):
    paths = [*draw_photos(folder / name, "circle", count, seed),
             *draw_photos(folder / name, "square", count, seed)]
    labels = np.array([0] * count + [1] * count)
    pixels = next(pixel_batches(paths, 64, len(paths)))[0]
    features = backbone.features(tf.constant(pixels, tf.float32)).numpy()
    splits[name] = (LabelledPaths(paths, labels), SplitData(features, labels))
head_options = HeadOptions(epochs=5)
head = train_head(*(splits[name][1] for name in ("train", "validation", "test")), 2,
                  head_options, say=lambda line: None)
start = backbone.model.get_weights()
results = {}
for label, devices, batch_size in (("one", ["/cpu:0"], 16), ("two", ["/cpu:0", "/cpu:1"], 8)):
    backbone.model.set_weights(start)
    lines = []
    tuned = fine_tune(
        backbone, head, head_options,
        *(splits[name][0] for name in ("train", "validation", "test")),
        DistortionOptions(flip_left_right=True, random_crop=10),
        FineTuneOptions(blocks=1, epochs=2, batch_size=batch_size, on_validation=False),
        seed=0, say=lines.append, devices=devices,
    )
    results[label] = {
        "accuracy": tuned.test_accuracy,
        "scores": tuned.test_scores.tolist(),
        "history": {key: tuned.history[f"fine_tune_{key}"] for key in ("loss", "val_loss")},
        "backbone_changed": max(
            float(np.abs(new - old).max())
            for new, old in zip(backbone.model.get_weights(), start)
        ),
        "lines": lines,
    }
print(json.dumps(results))
"""


def test_mirrored_fine_tuning_on_two_devices_lands_where_one_device_does(tmp_path):
    """Two replicas of 8 photos a step give what one device gives with 16 (the global batch):
    the same accuracy and, up to float noise, the same scores and losses; and the backbone
    itself is fine-tuned (the export freezes its weights)."""
    result = run(sys.executable, "-c", MIRRORED, tmp_path, ROOT / "tests")
    one, two = json.loads(result.stdout.splitlines()[-1]).values()
    assert any("on 2 devices (16 photos a step)" in line for line in two["lines"]), two["lines"]
    assert not any("devices" in line for line in one["lines"]), one["lines"]
    assert abs(one["accuracy"] - two["accuracy"]) <= 0.01
    for key in ("loss", "val_loss"):  # every epoch, on training and (kept apart) validation photos
        pairs = zip(one["history"][key], two["history"][key], strict=True)
        assert max(abs(a - b) for a, b in pairs) < 1e-4
    difference = max(
        abs(a - b)
        for row_one, row_two in zip(one["scores"], two["scores"], strict=True)
        for a, b in zip(row_one, row_two, strict=True)
    )
    assert difference < 1e-4
    # The backbone itself was tuned (the export freezes its weights), on both runs alike.
    assert one["backbone_changed"] > 1e-5
    assert abs(one["backbone_changed"] - two["backbone_changed"]) < 1e-4


def _tiny_splits(folder, backbone):
    """Circles and squares: (train, validation, test) as LabelledPaths and as SplitData."""
    import numpy as np
    import tensorflow as tf

    from helpers import draw_photos
    from tensorguess.data.images import pixel_batches
    from tensorguess.training.fine_tune import LabelledPaths
    from tensorguess.training.head import SplitData

    splits = []
    for name, count, seed in (("train", 8, 1), ("validation", 4, 2), ("test", 4, 3)):
        paths = [
            *draw_photos(folder / name, "circle", count, seed),
            *draw_photos(folder / name, "square", count, seed),
        ]
        labels = np.array([0] * count + [1] * count)
        pixels = next(pixel_batches(paths, backbone.image_size, len(paths)))[0]
        features = backbone.features(tf.constant(pixels, tf.float32)).numpy()
        splits.append((LabelledPaths(paths, labels), SplitData(features, labels)))
    return splits


def test_mirror_images_are_fine_tuned_from_stored_boundaries_not_a_backbone_per_epoch(
    tmp_path, monkeypatch
):
    """--flip_left_right alone: the frozen bottom runs once on each training photo's mirror
    image too, and every epoch picks one of the two: the whole backbone never runs per epoch.
    The stored mirror boundaries are those of the mirrored photo files themselves."""
    import numpy as np

    from tensorguess.data.images import pixel_batches
    from tensorguess.features.backbones import get_backbone
    from tensorguess.training import fine_tune as module
    from tensorguess.training.head import train_head
    from tensorguess.training.options import DistortionOptions, FineTuneOptions, HeadOptions

    backbone = get_backbone("efficientnet_lite0", 64)
    splits = _tiny_splits(tmp_path, backbone)
    head_options = HeadOptions(epochs=3)
    head = train_head(*(split[1] for split in splits), 2, head_options, say=lambda _: None)
    stored = []
    store = module.store_boundaries

    def remember(run, paths, size, file, mirror=False):
        kept = store(run, paths, size, file, mirror)
        stored.append((list(paths), mirror, kept.values.copy()))
        return kept

    monkeypatch.setattr(module, "store_boundaries", remember)
    monkeypatch.setattr(module, "distort", lambda *a: pytest.fail("a photo distorted afresh"))
    lines = []
    tuned = module.fine_tune(
        backbone,
        head,
        head_options,
        *(split[0] for split in splits),
        DistortionOptions(flip_left_right=True),
        FineTuneOptions(blocks=1, epochs=2),
        say=lines.append,
        engine="tensorflow",  # float32, so that the comparison below is exact enough
    )
    assert "run once on all 32 photos" in lines[0] and "or its mirror image" in lines[0]
    assert tuned.test_accuracy is not None
    train_paths, mirror, mirrors = stored[-1]
    # The photos fine-tuning learns from: the training ones and, by default, the validation ones.
    assert mirror and train_paths == [*splits[0][0].paths, *splits[1][0].paths]
    assert not any(mirror for _, mirror, _ in stored[:-1])

    # The stored mirror boundaries are the bottom's output on the mirrored pixels.
    pixels = next(pixel_batches(train_paths[:4], 64, 4))[0]
    run = module.bottom_runner(backbone, 1, "tensorflow")
    expected = run(np.ascontiguousarray(pixels[:, :, ::-1]))
    np.testing.assert_allclose(mirrors[:4], expected, atol=1e-4 * np.abs(expected).max())
    assert np.abs(stored[0][2][:4] - expected).max() > 0.1 * np.abs(expected).max()


def test_fine_tuning_changes_the_top_blocks_pointwise_convolutions_and_nothing_below(tmp_path):
    """What fine-tuning may change: the top blocks' expanding and projecting convolutions and
    the last one's; their depthwise convolutions keep their pretrained weights (a cheaper
    step), and so does every frozen block, whose output was stored once."""
    import numpy as np

    from tensorguess.features.backbones import get_backbone
    from tensorguess.training.fine_tune import fine_tune
    from tensorguess.training.head import train_head
    from tensorguess.training.options import DistortionOptions, FineTuneOptions, HeadOptions

    backbone = get_backbone("efficientnet_lite0", 64)
    splits = _tiny_splits(tmp_path, backbone)
    head_options = HeadOptions(epochs=3)
    head = train_head(*(split[1] for split in splits), 2, head_options, say=lambda _: None)
    before = {layer.name: layer.get_weights() for layer in backbone.model.layers}
    fine_tune(
        backbone,
        head,
        head_options,
        *(split[0] for split in splits),
        DistortionOptions(),
        FineTuneOptions(blocks=2, epochs=2, learning_rate=0.01),
        say=lambda _: None,
    )
    changed = {
        layer.name
        for layer in backbone.model.layers
        if any(
            np.abs(new - old).max() > 0
            for new, old in zip(layer.get_weights(), before[layer.name], strict=True)
        )
    }
    blocks = sorted({int(name[5:].split("_")[0]) for name in before if name[:5] == "block"})
    top = [f"block{number}" for number in blocks[-2:]]
    learnt = {name for name in before if name.split("_")[0] in top and "depthwise" not in name}
    learnt = {name for name in learnt if before[name]} | {"head_conv"}
    assert changed == learnt, (sorted(changed), sorted(learnt))


def test_trivial_augment_changes_each_photo_its_own_way_and_keeps_it_a_photo():
    """One operation per photo at a random strength: the same seeds give the same photos,
    values stay pixels, most photos change and differently from each other, and a few draw
    no change at all (1 in 13)."""
    import numpy as np
    import tensorflow as tf

    from tensorguess.training.augment import trivial_augment

    rng = np.random.default_rng(0)
    photo = np.zeros((48, 48, 3), np.float32)
    photo[8:40, 16:32] = [200, 60, 30]  # a bar on black, with a gradient behind it
    photo[..., 2] += np.linspace(0, 120, 48)[None, :]
    pixels = tf.constant(np.repeat(photo[None], 130, axis=0))
    seeds = rng.integers(0, 2**31 - 1, size=(130, 2))
    changed = trivial_augment(pixels, seeds).numpy()
    np.testing.assert_array_equal(changed, trivial_augment(pixels, seeds).numpy())
    assert changed.shape == pixels.shape and changed.min() >= 0 and changed.max() <= 255
    differences = np.abs(changed - photo).max(axis=(1, 2, 3))
    assert (differences > 1).sum() >= 100  # changed
    assert 1 <= (differences < 1e-3).sum() <= 30  # the identity's share, about 10 of 130
    assert len({np.round(image).tobytes() for image in changed}) >= 100
    # Rotated or shifted photos uncover grey corners; the photo has no grey of its own.
    assert (np.abs(changed - 128).max(axis=-1) < 1).any(axis=(1, 2)).sum() >= 10


def test_trivial_augment_runs_on_every_photo_learnt_from_at_every_epoch(tmp_path, monkeypatch):
    """--fine_tune_augment trivial: each epoch runs the engine's frozen blocks on every
    training (and validation) photo changed afresh, as whole pixels, and says so; the test
    photos and the tuned features come from boundaries stored once."""
    import numpy as np

    from tensorguess.features.backbones import get_backbone
    from tensorguess.training import fine_tune as module
    from tensorguess.training.head import train_head
    from tensorguess.training.options import DistortionOptions, FineTuneOptions, HeadOptions

    backbone = get_backbone("efficientnet_lite0", 64)
    splits = _tiny_splits(tmp_path, backbone)
    head_options = HeadOptions(epochs=3)
    head = train_head(*(split[1] for split in splits), 2, head_options, say=lambda _: None)
    import tensorflow as tf

    augmented = tf.Variable(0)  # counts inside the traced step, at every call
    augment = module.trivial_augment

    def count(pixels, seeds):
        augmented.assign_add(tf.shape(pixels)[0])
        return augment(pixels, seeds)

    ran = []  # (dtype, photos) of every batch the frozen blocks ran on
    runner = module.bottom_runner

    def counting_runner(*args):
        run = runner(*args)

        def counted(pixels):
            ran.append((pixels.dtype, len(pixels)))
            return run(pixels)

        return counted

    monkeypatch.setattr(module, "trivial_augment", count)
    monkeypatch.setattr(module, "bottom_runner", counting_runner)
    lines = []
    tuned = module.fine_tune(
        backbone,
        head,
        head_options,
        *(split[0] for split in splits),
        DistortionOptions(),
        FineTuneOptions(blocks=1, epochs=2, batch_size=8, augment="trivial"),
        say=lines.append,
        tuned_features=True,
    )
    assert "changed afresh (TrivialAugment: one random operation a photo)" in lines[0]
    assert tuned.test_accuracy is not None and len(tuned.history["fine_tune_loss"]) == 2
    # Both epochs changed all 24 photos learnt from (16 training, 8 validation); the test
    # photos were scored as they are.
    assert int(augmented.numpy()) == 2 * 24
    tests = len(splits[2][0])
    assert all(dtype == np.uint8 for dtype, _ in ran)
    assert sum(photos for _, photos in ran) == 24 + tests + 2 * 24  # stored once, then changed
    assert [len(tuned.tuned_features[name]) for name in ("train", "validation")] == [16, 8]


def test_mixup_mixes_pairs_of_photos_and_their_targets_alike():
    """Each mixed photo is share * itself + (1 - share) * another photo of the batch, its
    target and label weight the same mixture; the label it counts as has the larger share."""
    import numpy as np

    from tensorguess.training.fine_tune import _mixed

    rng = np.random.default_rng(0)
    boundary = rng.normal(size=(16, 3, 3, 2)).astype(np.float32)
    labels = np.arange(16) % 4
    targets = np.eye(4, dtype=np.float32)[labels]
    weights = np.array([1.0, 2.0, 3.0, 4.0], np.float32)[labels]
    mixed, mixed_targets, mixed_weights, counted = _mixed(
        np.random.default_rng(1), 0.4, boundary, targets, weights, labels
    )
    assert mixed.shape == boundary.shape and mixed.dtype == np.float32
    np.testing.assert_allclose(mixed_targets.sum(axis=1), 1, rtol=1e-6)
    assert (mixed_targets.max(axis=1) < 1).sum() >= 8  # pairs of different labels mixed
    for row in range(16):
        share = mixed_targets[row, labels[row]]
        if share == 1:
            continue  # paired with a photo of its own label
        partner = int(np.argmax(mixed_targets[row] * (np.arange(4) != labels[row])))
        other = np.flatnonzero(labels == partner)
        candidates = [share * boundary[row] + (1 - share) * boundary[o] for o in other]
        assert min(np.abs(mixed[row] - c).max() for c in candidates) < 1e-5
        assert mixed_weights[row] == pytest.approx(
            share * weights[row] + (1 - share) * (partner + 1)
        )
        assert counted[row] == (labels[row] if share >= 0.5 else partner)


ONEDNN = """
from tensorguess.quiet import import_tensorflow_quietly

import_tensorflow_quietly()  # as every command starts TensorFlow
from tensorflow.python.util import _pywrap_util_port

print(_pywrap_util_port.IsMklEnabled())
"""


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64"), reason="oneDNN's switch is TensorFlow's on x86"
)
@pytest.mark.parametrize(("given", "on"), [(None, "True"), ("0", "False")])
def test_tensorflow_starts_with_onednn_kernels_unless_the_user_turns_them_off(given, on):
    """TensorFlow turns oneDNN on by itself only on CPUs with AVX-512 VNNI or newer; the
    commands turn it on everywhere (fine-tuning epochs a quarter shorter on AVX2 alone),
    and keep a user's TF_ENABLE_ONEDNN_OPTS=0."""
    env = {name: value for name, value in os.environ.items() if name != "TF_ENABLE_ONEDNN_OPTS"}
    if given is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = given
    result = subprocess.run(
        [sys.executable, "-c", ONEDNN], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == on
