"""int8: train --engine openvino-int8 quantises the features and the exported classifier, keeps
the classifier only when it passes the validation check, and guess/guessDir run it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from helpers import make_tf_files, one_line_error, tensorguess


def _best(output: str) -> str:
    return output.splitlines()[0].split(" (score")[0]


def test_an_int8_train_keeps_a_checked_int8_classifier_that_guessdir_runs(tmp_path):
    tf_files = make_tf_files(tmp_path / "tf_files", per_label=12)
    cache = tmp_path / "features"
    train = tensorguess(
        "train", tf_files, "--engine", "openvino-int8", "--preset", "fast", "--epochs", "10",
        "--validation_percentage", "25", "--testing_percentage", "20", "--no_report",
        "--bottleneck_dir", cache, TENSORGUESS_PROGRESS="0",
    )  # fmt: skip
    # The log states the check: both accuracies, the verdict.
    check = re.search(
        r"^int8: validation accuracy ([\d.]+)% against ([\d.]+)% in \w+ .*; kept",
        train.stdout,
        re.M,
    )
    assert check, train.stdout
    recorded = json.loads((tf_files / "tensorguess.json").read_text())["int8"]
    assert recorded["kept"] and recorded["int8_accuracy"] >= recorded["float_accuracy"] - 0.5
    assert (tf_files / "openvino-int8" / "model.xml").is_file()
    # The head learned from int8 features, cached apart from float ones (by their calibration).
    assert [folder.name.split("-d1-")[1][:3] for folder in cache.iterdir()] == ["i8-"]

    photo = next((tf_files / "data" / "circle").iterdir())
    in_int8 = tensorguess("guess", tf_files, photo, "--engine", "openvino-int8").stdout
    in_float = tensorguess("guess", tf_files, photo, "--engine", "openvino").stdout
    assert _best(in_int8) == _best(in_float) == "circle"
    scores = [float(s) for s in re.findall(r"score = ([\d.]+)", in_int8)]
    assert abs(scores[0] - float(re.findall(r"score = ([\d.]+)", in_float)[0])) < 0.05

    # guessDir (auto) runs the int8 model and sorts the photos as the float model would.
    sorted_folder = tmp_path / "sorted"
    tensorguess(
        "sort", tf_files, tf_files / "data" / "square", sorted_folder, TENSORGUESS_PROGRESS="0"
    )
    names = [path.name for path in sorted_folder.glob("*.jpg")]
    assert len(names) == 12 and all(name.startswith("square-") for name in names)


def test_asking_for_int8_where_train_kept_none_is_one_line(trained):
    tf_files, _ = trained
    photo = next((tf_files / "data" / "circle").iterdir())
    result = tensorguess("guess", tf_files, photo, "--engine", "openvino-int8", check=False)
    one_line_error(result, "openvino-int8", "train with --engine openvino-int8")
    assert not Path(tf_files / "openvino-int8").exists()
