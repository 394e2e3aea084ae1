"""`hub:` backbones: an image feature-vector SavedModel the test builds, trained end to end."""

from __future__ import annotations

from helpers import colour_photos as _photos
from helpers import in_process, save_colour_features_model


def test_hub_savedmodel_backbone_trains_and_guesses(tmp_path):
    model_dir = save_colour_features_model(tmp_path / "feature_vector")
    tf_files = tmp_path / "tf_files"
    _photos(tf_files / "data" / "red", (220, 30, 30), 20, 1)
    _photos(tf_files / "data" / "blue", (30, 30, 220), 20, 2)

    trained = in_process("train", tf_files, "--backbone", f"hub:{model_dir}")
    assert "Final test accuracy = 100.0%" in trained.stdout

    _photos(tmp_path / "new", (200, 40, 40), 1, 3)
    guessed = in_process("guess", tf_files, tmp_path / "new" / "00.png")
    assert guessed.stdout.splitlines()[0].startswith("red (score = ")


def test_hub_path_that_is_not_a_savedmodel(tmp_path):
    tf_files = tmp_path / "tf_files"
    _photos(tf_files / "data" / "red", (220, 30, 30), 2, 1)
    _photos(tf_files / "data" / "blue", (30, 30, 220), 2, 2)
    (tmp_path / "empty").mkdir()
    result = in_process("train", tf_files, "--backbone", f"hub:{tmp_path / 'empty'}", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no saved_model.pb" in result.stderr
