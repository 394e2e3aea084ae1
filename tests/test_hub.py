"""`hub:` backbones: an image feature-vector SavedModel the test builds, trained end to end."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from PIL import Image

from conftest import tensorguess


class _ColourFeatures(tf.Module):
    """A stand-in feature-vector model: per-channel means and a fixed projection of them."""

    def __init__(self):
        super().__init__()
        self.projection = tf.Variable(
            np.random.default_rng(0).normal(size=(3, 8)), dtype=tf.float32
        )

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
    def __call__(self, images):
        means = tf.reduce_mean(images, axis=[1, 2])
        return tf.concat([means, tf.matmul(means, self.projection)], axis=1)


def _photos(folder, colour, count, seed):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for number in range(count):
        noise = rng.normal(0, 25, size=(40, 40, 3))
        pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{number:02d}.png")


def test_hub_savedmodel_backbone_trains_and_guesses(tmp_path):
    model_dir = tmp_path / "feature_vector"
    tf.saved_model.save(_ColourFeatures(), str(model_dir))
    tf_files = tmp_path / "tf_files"
    _photos(tf_files / "data" / "red", (220, 30, 30), 20, 1)
    _photos(tf_files / "data" / "blue", (30, 30, 220), 20, 2)

    trained = tensorguess("train", tf_files, "--backbone", f"hub:{model_dir}")
    assert "Final test accuracy = 100.0%" in trained.stdout

    _photos(tmp_path / "new", (200, 40, 40), 1, 3)
    guessed = tensorguess("guess", tf_files, tmp_path / "new" / "00.png")
    assert guessed.stdout.splitlines()[0].startswith("red (score = ")


def test_hub_path_that_is_not_a_savedmodel(tmp_path):
    tf_files = tmp_path / "tf_files"
    _photos(tf_files / "data" / "red", (220, 30, 30), 2, 1)
    _photos(tf_files / "data" / "blue", (30, 30, 220), 2, 2)
    (tmp_path / "empty").mkdir()
    result = tensorguess("train", tf_files, "--backbone", f"hub:{tmp_path / 'empty'}", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no saved_model.pb" in result.stderr
