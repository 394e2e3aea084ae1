"""int8: train --engine openvino-int8 quantises the features and the exported classifier, keeps
the classifier only when it passes the validation check, and guess/guessDir run it."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from helpers import InProcess, in_process, make_tf_files, one_line_error, tensorguess
from tensorguess.classify.cluster.workers import ClassifyWorker, ModelFiles
from tensorguess.classify.layouts import detect_layout
from tensorguess.classify.loading import load_classifier
from tensorguess.classify.model_reader import read_graph, read_model_bytes
from tensorguess.features.engines.int8 import calibration_photos
from tensorguess.files import file_digest
from tensorguess.training import quantize


def test_an_int8_train_keeps_a_checked_int8_classifier_that_guessdir_runs(
    tmp_path, monkeypatch, capfd
):
    tf_files = make_tf_files(tmp_path / "tf_files", per_label=12)
    cache = tmp_path / "features"
    monkeypatch.setenv("TENSORGUESS_PROGRESS", "0")
    # In this process (no TensorFlow import of its own); capfd holds whatever bypasses
    # sys.stdout and sys.stderr, as a subprocess's pipes would.
    train = in_process(
        "train", tf_files, "--engine", "openvino-int8", "--preset", "fast", "--epochs", "10",
        "--validation_percentage", "25", "--testing_percentage", "20", "--no_report",
        "--bottleneck_dir", cache,
    )  # fmt: skip
    around = capfd.readouterr()
    # The log states the check (both accuracies, the verdict), and nothing of NNCF's own.
    assert "Statistics collection" not in train.stdout + train.stderr + around.out + around.err
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

    # guess.sh and guessDir.sh load it under auto (and when asked for), and it labels photos.
    for engine in (None, "openvino-int8"):
        classifier = load_classifier(tf_files, engine=engine)
        assert classifier.engine == "openvino-int8"
    squares = sorted((tf_files / "data" / "square").iterdir())
    labels = [p.ranked(classifier.labels, 1)[0][0] for p in classifier.classify(squares)]
    assert labels == ["square"] * 12
    # A Ray worker gets the int8 model with the graph: it runs what a local sort runs.
    worker = ClassifyWorker(InProcess(ModelFiles.of(classifier, {}, None)), str(squares[0].parent))
    assert worker.classifier.engine == "openvino-int8"
    answered = worker({"path": np.array([str(photo) for photo in squares])})["prediction"]
    for mine, local in zip(answered, classifier.classify(squares), strict=True):
        np.testing.assert_allclose(mine.scores, local.scores, atol=1e-6)

    # One that fails the check is not kept, and guessDir goes back to the float model.
    monkeypatch.setattr(quantize, "MAX_ACCURACY_DROP", -200.0)  # int8 must gain 200 points
    assert not _check_again(tf_files).kept
    assert json.loads((tf_files / "tensorguess.json").read_text())["int8"]["kept"] is False
    assert not (tf_files / "openvino-int8").exists()
    assert load_classifier(tf_files).engine != "openvino-int8"


def _check_again(tf_files: Path) -> quantize.Int8Check:
    """quantize.py's step of train, run again on the trained graph."""
    graph = tf_files / "retrained_graph.pb"
    data = read_model_bytes(graph)
    graph_def = read_graph(graph, data)
    photos = sorted((tf_files / "data").glob("*/*.jpg"))
    metadata = json.loads((tf_files / "tensorguess.json").read_text())
    labels = metadata["labels"]
    return quantize.quantize_classifier(
        tf_files,
        graph_def,
        detect_layout(graph_def),
        hashlib.sha256(data).hexdigest(),
        metadata["precision"],
        calibration_photos(photos, [file_digest(photo) for photo in photos]),
        [(photo, labels.index(photo.parent.name)) for photo in photos[::3]],
    )


def test_asking_for_int8_where_train_kept_none_is_one_line(trained):
    tf_files, _ = trained
    photo = next((tf_files / "data" / "circle").iterdir())
    result = tensorguess("guess", tf_files, photo, "--engine", "openvino-int8", check=False)
    one_line_error(result, "openvino-int8", "train with --engine openvino-int8")
    assert not Path(tf_files / "openvino-int8").exists()


def test_an_int8_train_fine_tunes_with_the_validation_photos_kept_apart(monkeypatch):
    """The int8 model is checked on the validation photos, so fine-tuning must not learn from
    them under --engine openvino-int8 (it does by default otherwise), and the log says so;
    nor for a multi-label model, whose thresholds are chosen on them."""
    from types import SimpleNamespace

    from tensorguess.classify.task import SINGLE, MultiLabel
    from tensorguess.training import fine_tune as module
    from tensorguess.training import pipeline
    from tensorguess.training.presets import preset_options

    given = []
    monkeypatch.setattr(module, "fine_tune", lambda *args, **kwargs: given.append(args[7]))
    split = SimpleNamespace(labels=np.zeros(2, int))
    data = pipeline._TrainingData(
        splits=dict.fromkeys(("train", "validation", "test"), split),
        photos=dict.fromkeys(
            ("train", "validation", "test"), [SimpleNamespace(path=Path("a"))] * 2
        ),
        rows=dict.fromkeys(("train", "validation", "test"), np.arange(2)),
        labels=["a", "b"],
        task=SINGLE,
    )
    options = preset_options()
    assert options.fine_tune.on_validation
    for int8 in (False, True):
        lines: list[str] = []
        engines = pipeline._Engines("openvino", "openvino", int8)
        pipeline._fine_tune(None, None, data, options, engines, lines.append, None)
        assert given[-1].on_validation is not int8
        assert any("keeps the validation photos apart" in line for line in lines) is int8
    data.task = MultiLabel()
    pipeline._fine_tune(None, None, data, options, engines, print, None)
    assert not given[-1].on_validation
