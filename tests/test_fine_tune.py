"""Fine-tuning on several devices: MirroredStrategy lands where one device does.

TensorFlow's devices are fixed when it starts, so the comparison runs in a subprocess that
splits the CPU into two logical devices first.
"""

from __future__ import annotations

import json
import sys

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
from tensorguess.backbones import get_backbone
from tensorguess.fine_tune import LabelledPaths, fine_tune
from tensorguess.head import SplitData, train_head
from tensorguess.images import pixel_batches
from tensorguess.options import DistortionOptions, FineTuneOptions, HeadOptions

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
        FineTuneOptions(blocks=1, epochs=2, batch_size=batch_size),
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
    for key in ("loss", "val_loss"):  # every epoch, on training and validation photos
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
