"""Multi-label: labels.csv and label folders, training with a sigmoid per label and chosen
thresholds, guess.sh's marks, guessDir.sh's folder per label (killed and resumed, --move
without hard links), evaluate, and the exported files in LiteRT, ONNX Runtime and
MediaPipe.

The photos are drawn: a 2 x 2 grid of cells, each label's shape in a cell of its own, the
other cells plain; a photo with no shape has no label.
"""

from __future__ import annotations

import csv
import errno
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import in_process, label_image_2016, one_line_error, wrapper
from tensorguess.classify.loading import load_classifier
from tensorguess.classify.sort import sort_folder
from tensorguess.classify.task import DEFAULT_THRESHOLD, MultiLabel, best_f1_threshold
from tensorguess.data.dataset import scan_data
from tensorguess.data.sample_data import draw_shape
from tensorguess.files import file_digest
from tensorguess.quality.evaluate import average_precision

SHAPES = ["circle", "square", "triangle"]
CELL = 80


def tagged_photo(path: Path, labels: list[str], seed: int) -> Path:
    """A JPEG of `labels`' shapes, each in its own cell of a 2 x 2 grid; plain cells else."""
    rng = random.Random(f"{'+'.join(labels)}-{seed}")
    photo = Image.new("RGB", (2 * CELL, 2 * CELL))
    cells = rng.sample(range(4), len(labels))
    for cell in range(4):
        if cell in cells:
            part = draw_shape(labels[cells.index(cell)], rng, size=CELL)
        else:  # a corner of a drawn photo, blown up: colour and noise, no shape
            part = draw_shape("circle", rng, size=CELL).crop((0, 0, 8, 8)).resize((CELL, CELL))
        photo.paste(part, ((cell % 2) * CELL, (cell // 2) * CELL))
    path.parent.mkdir(parents=True, exist_ok=True)
    photo.save(path, quality=90)
    return path


def tagged_photos(folder: Path, count: int, seed: int) -> dict[Path, list[str]]:
    """`count` photos of 0 to 3 shapes each: {path: its labels}."""
    rng = random.Random(seed)
    photos = {}
    for number in range(count):
        labels = rng.sample(SHAPES, rng.choice([0, 1, 1, 2, 2, 3]))
        photos[tagged_photo(folder / f"p{seed}_{number:03d}.jpg", labels, seed + number)] = labels
    return photos


def write_labels_csv(path: Path, photos: dict[Path, list[str]], root: Path) -> None:
    lines = ["image,labels"]
    lines += [
        f"{photo.relative_to(root).as_posix()},{' '.join(labels)}"
        for photo, labels in photos.items()
    ]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A multi-label model trained once on labels.csv (the head-only preset), with that run's
    output: in this process, since what train computes and prints is the point (guess.sh and
    guessDir.sh below go through the scripts)."""
    tf_files = tmp_path_factory.mktemp("multilabel") / "tf_files"
    photos = tagged_photos(tf_files / "data" / "photos", 120, seed=1)
    write_labels_csv(tf_files / "labels.csv", photos, tf_files / "data")
    result = in_process(
        "train", tf_files, "--preset", "fast", "--validation_percentage", "15",
        "--testing_percentage", "20",
    )  # fmt: skip
    return tf_files, result


@pytest.fixture(scope="module")
def classifier(model):
    return load_classifier(model[0])


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> dict[Path, list[str]]:
    """Photos the model never saw, one of each kind: none, one, two and three shapes."""
    folder = tmp_path_factory.mktemp("fresh")
    kinds = [[], ["circle"], ["square"], ["triangle"], ["circle", "square"]]
    kinds += [["square", "triangle"], ["circle", "triangle"], SHAPES]
    return {
        tagged_photo(folder / f"photo_{number}.jpg", labels, 900 + number): labels
        for number, labels in enumerate(kinds)
    }


# Training ---------------------------------------------------------------------------------


def test_train_says_why_it_is_multi_label_and_reports_what_multi_label_users_read(model):
    tf_files, result = model
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"Multi-label: {tf_files / 'labels.csv'} gives each photo its labels (any number, "
        "none included)"
    )
    assert "Final test accuracy" not in result.stdout
    figures = re.search(
        r"^Final test micro-F1 = ([\d.]+), mAP = ([\d.]+) \(N=(\d+)\)$", result.stdout, re.M
    )
    assert figures, result.stdout
    assert float(figures.group(1)) >= 0.8 and float(figures.group(2)) >= 0.8
    assert re.search(
        r"^Exact match \(every label right\) = [\d.]+%, macro-F1 = [\d.]+$", result.stdout, re.M
    )
    assert re.search(
        r"^label\s+precision\s+recall\s+F1\s+AP\s+threshold\s+photos$", result.stdout, re.M
    )
    metadata = json.loads((tf_files / "tensorguess.json").read_text())
    assert metadata["task"] == "multi-label" and sorted(metadata["thresholds"]) == SHAPES
    assert all(0 < value < 1 for value in metadata["thresholds"].values())
    assert metadata["test_micro_f1"] == pytest.approx(float(figures.group(1)), abs=5e-4)
    page = (tf_files / "report.html").read_text()
    assert "Precision and recall per label" in page and "Worst misses" in page
    assert (tf_files / "precision_recall.png").exists()
    # The data check at the end reads the photos as multi-label: no "conflicting" labels,
    # missing and extra labels instead of "likely mislabelled" (the labels here are right).
    check = result.stdout.split("Data check", 1)[1]
    assert "Likely missing labels: 0" in check and "Likely extra labels: 0" in check, check
    assert "Likely mislabelled" not in check


def test_the_2016_contract_holds_with_a_sigmoid_per_label(model, fresh):
    tf_files, _ = model
    both = next(photo for photo, labels in fresh.items() if labels == ["circle", "square"])
    labels, scores = label_image_2016(
        tf_files / "retrained_graph.pb", tf_files / "retrained_labels.txt", both
    )
    assert labels == SHAPES and scores.shape == (1, 3)
    # Two labels over 0.5 at once: no softmax could.
    assert scores[0, 0] > 0.5 and scores[0, 1] > 0.5 and scores[0, 2] < 0.5


# guess.sh ---------------------------------------------------------------------------------


def test_guess_marks_the_labels_over_their_thresholds(model, fresh):
    tf_files, _ = model
    thresholds = json.loads((tf_files / "tensorguess.json").read_text())["thresholds"]
    text = wrapper("guess.sh", tf_files, *fresh).stdout
    answers = json.loads(in_process("guess", tf_files, *fresh, "--json").stdout)
    right = 0
    for truth, answer, block in zip(
        fresh.values(), answers, re.split(r"^.*:\n", text, flags=re.M)[1:], strict=True
    ):
        assert [p["label"] for p in answer["predictions"]] == [
            line.split(" (")[0] for line in block.splitlines() if "(score = " in line
        ]
        marked = [line.split(" ")[0] for line in block.splitlines() if " over threshold " in line]
        assert marked == answer["labels"], block  # every label over its threshold, best first
        for prediction in answer["predictions"]:
            over = prediction["score"] >= thresholds[prediction["label"]]
            assert over == (prediction["label"] in answer["labels"])
        assert ("(no label over its threshold)" in block) == (answer["labels"] == [])
        right += sorted(answer["labels"]) == sorted(truth)
    assert right >= len(fresh) - 1


# guessDir.sh ------------------------------------------------------------------------------


def _rows(destination: Path) -> list[dict[str, str]]:
    with open(destination / "manifest.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def _check_sorted(destination: Path, photos: list[Path], hard_links: bool = True) -> None:
    """Each photo listed once; each name of its copy in the folder of one of its labels (or
    untagged/) with the photo's bytes; hard links of one file, or copies."""
    rows = _rows(destination)
    assert sorted(row["source"] for row in rows) == sorted(str(photo) for photo in photos)
    named = set()
    for row in rows:
        copies = [destination / name for name in row["copies"].split()]
        assert str(copies[0]) == row["destination"]
        folders = [copy.parent.name for copy in copies]
        assert folders == (row["labels"].split() or ["untagged"])
        for copy, folder in zip(copies, folders, strict=True):
            label = folder if folder != "untagged" else row["label"]
            assert re.fullmatch(rf"{label}-{row[label]}(-\d+)?\.jpg", copy.name), copy
            assert file_digest(copy) == row["sha256"]
        inodes = {copy.stat().st_ino for copy in copies}
        assert len(inodes) == (1 if hard_links else len(copies))
        named.update(copies)
    on_disk = {path for path in destination.rglob("*") if path.is_file()}
    assert on_disk - named == {destination / "manifest.csv"}, sorted(on_disk - named)


def test_each_labels_heat_map_lies_on_its_own_shape(model, tmp_path):
    """A sigmoid per label: the evidence for one label is its own logit, so on a photo of a
    circle and a square each label's map is brighter on its own shape's cell."""
    tf_files, _ = model
    labels, seed = ["circle", "square"], 950
    photo = tagged_photo(tmp_path / "two.jpg", labels, seed)
    cells = random.Random(f"{'+'.join(labels)}-{seed}").sample(range(4), len(labels))
    for label, cell in zip(labels, cells, strict=True):
        folder = tmp_path / label
        (answer,) = json.loads(
            in_process(
                "guess", tf_files, photo, "--explain", folder, "--explain_label", label, "--json"
            ).stdout
        )
        values = np.asarray(Image.open(answer["heatmap"]), np.float64)
        mass = {
            number: values[
                (number // 2) * CELL : (number // 2 + 1) * CELL,
                (number % 2) * CELL : (number % 2 + 1) * CELL,
            ].sum()
            for number in cells
        }
        other = next(number for number in cells if number != cell)
        assert mass[cell] > mass[other], (label, mass)


def test_guessdir_puts_each_photo_in_the_folder_of_every_label_it_has(model, fresh, tmp_path):
    tf_files, _ = model
    source, destination = next(iter(fresh)).parent, tmp_path / "sorted"
    result = wrapper("guessDir.sh", tf_files, source, destination)
    _check_sorted(destination, list(fresh))
    rows = {Path(row["source"]).name: row for row in _rows(destination)}
    assert rows["photo_0.jpg"]["labels"] == ""  # the photo of no shape
    assert sorted(rows["photo_7.jpg"]["labels"].split()) == SHAPES
    assert re.search(
        r"^Sorted 8 images into .*\(circle \d, square \d, triangle \d", result.stdout, re.M
    )
    again = wrapper("guessDir.sh", tf_files, source, destination)
    assert "Already sorted by an earlier run: 8" in again.stdout
    assert len(_rows(destination)) == 8


KILL_AT_SECOND_NAME = """
import os, signal, sys
from pathlib import Path
from tensorguess.classify.loading import load_classifier
from tensorguess.classify.sort import sort_folder

link = os.link
def dying_link(source, target, *args, **kwargs):
    if not Path(source).name.startswith(".tmp-sort-"):  # a second name: the copy is named
        os.kill(os.getpid(), signal.SIGKILL)
    return link(source, target, *args, **kwargs)
os.link = dying_link
sort_folder(load_classifier(Path(sys.argv[1])), Path(sys.argv[2]), Path(sys.argv[3]))
"""


def test_guessdir_killed_while_naming_a_copy_is_finished_by_the_next(model, fresh, tmp_path):
    tf_files, _ = model
    source, destination = next(iter(fresh)).parent, tmp_path / "sorted"
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AT_SECOND_NAME, tf_files, source, destination], timeout=120
    )
    assert killed.returncode == -signal.SIGKILL
    # Killed as the first photo with two labels got its second name: one name made, unlisted.
    orphans = [path for path in destination.glob("*/*") if path.is_file()]
    listed = {Path(row["destination"]) for row in _rows(destination)}
    assert [orphan for orphan in orphans if orphan not in listed]

    report = sort_folder(load_classifier(tf_files), source, destination)

    _check_sorted(destination, list(fresh))
    assert not list(destination.glob(".tmp-*"))
    assert len(report.copied) + len(listed) == len(fresh)


def test_guessdir_move_without_hard_links_copies_into_each_folder(
    classifier, fresh, tmp_path, monkeypatch
):
    source, destination = tmp_path / "in", tmp_path / "sorted"
    source.mkdir()
    for photo in fresh:
        (source / photo.name).write_bytes(photo.read_bytes())
    photos = sorted(source.iterdir())

    def refusing_link(*args, **kwargs):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", refusing_link)
    report = sort_folder(classifier, source, destination, move=True)

    assert report.moved == len(photos) and not list(source.iterdir())
    _check_sorted(destination, photos, hard_links=False)


# Bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, words",
    [
        (
            "image,labels\nphotos/a.jpg,circle\nphotos/gone.jpg,square\n",
            ["1 of the photos", "gone.jpg", "not in"],
        ),
        ("image,labels\nphotos/a.jpg,circle/square\n", ["line 2", "path separator"]),
        ("image,labels\nphotos/a.jpg,\nphotos/b.jpg, \n", ["labels cell is empty on every line"]),
        (
            "photos/a.jpg,circle\nphotos/b.jpg,square\n",
            ["first line must be the header image,labels"],
        ),
    ],
    ids=["missing photo", "separator", "no labels", "no header"],
)
def test_a_mixed_up_labels_csv_is_one_clear_line(tmp_path, content, words):
    tf_files = tmp_path / "tf_files"
    for name in ("a", "b"):
        tagged_photo(tf_files / "data" / "photos" / f"{name}.jpg", ["circle"], 0)
    (tf_files / "labels.csv").write_text(content)
    result = wrapper("train.sh", tf_files, "--preset", "fast", check=False)
    one_line_error(result, str(tf_files / "labels.csv"), *words)
    assert not (tf_files / "retrained_graph.pb").exists()


# Scanning ---------------------------------------------------------------------------------


def test_folders_say_several_labels_with_multi_label_and_one_photo_keeps_one_split(tmp_path):
    data = tmp_path / "data"
    both = tagged_photo(data / "circle" / "both.jpg", ["circle", "square"], 1)
    (data / "square").mkdir()
    (data / "square" / "same photo.jpg").write_bytes(both.read_bytes())
    for number in range(30):
        tagged_photo(data / "square" / f"s{number}.jpg", ["square"], number)
        tagged_photo(data / "untagged" / f"n{number}.jpg", [], 100 + number)

    single = scan_data(data, multi_label=None)
    assert not single.multi_label and "--multi_label" in single.mode
    (conflict,) = [warning for warning in single.warnings if "identical images" in warning]
    assert "train with --multi_label" in conflict
    assert single.labels == ["circle", "square", "untagged"]

    scan = scan_data(data, 20, 20, multi_label=True)
    assert scan.multi_label and scan.labels == ["circle", "square"] and "--multi_label" in scan.mode
    (photo,) = [image for image in scan.images if image.digest == file_digest(both)]
    assert photo.labels == ("circle", "square") and photo.path == both
    assert len(scan.images) == 61  # the copy is the same photo: one image, one split
    assert sum(image.labels == () for image in scan.images) == 30
    assert len({image.split for image in scan.images}) == 3


def test_a_label_with_a_space_cannot_be_a_multi_label_folder(tmp_path):
    data = tmp_path / "data"
    tagged_photo(data / "big cat" / "a.jpg", ["circle"], 1)
    tagged_photo(data / "dog" / "b.jpg", ["square"], 2)
    scan = scan_data(data, multi_label=True)
    assert scan.labels == ["dog"]
    reasons = {path.name: reason for path, reason in scan.skipped}
    assert "cannot hold a space" in reasons["big cat"]


# The numbers ------------------------------------------------------------------------------


def test_average_precision_is_scikit_learns():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    for _ in range(50):
        has = rng.random(30) < 0.3
        scores = np.round(rng.random(30), 1)  # ties too
        if has.any():
            assert average_precision(scores, has) == pytest.approx(
                average_precision_score(has, scores)
            )


def test_each_threshold_is_the_best_f1_on_validation_and_half_without_positives():
    scores = np.array([0.95, 0.9, 0.6, 0.4, 0.35, 0.1])
    has = np.array([True, True, False, True, False, False])
    threshold = best_f1_threshold(scores, has)
    assert threshold == pytest.approx((0.4 + 0.35) / 2)  # takes all three: F1 6/7
    assert best_f1_threshold(scores, np.zeros(6, bool)) == DEFAULT_THRESHOLD
    task = MultiLabel().fitted(np.stack([scores, scores], 1), np.stack([has, 0 * has], 1))
    assert task.thresholds == (threshold, DEFAULT_THRESHOLD)


def test_balanced_weights_give_each_case_of_each_label_the_same_total():
    truth = np.array([[1, 0], [0, 0], [0, 0], [0, 1], [1, 1], [0, 0]], np.float32)
    task = MultiLabel()
    weights = task.photo_weights(task.label_balance(truth, 2, balance=True), truth)
    for column in range(2):
        has = truth[:, column] > 0
        assert weights[has, column].sum() == pytest.approx(weights[~has, column].sum())
    assert (task.photo_weights(task.label_balance(truth, 2, balance=False), truth) == 1).all()


# evaluate and export ----------------------------------------------------------------------


def test_evaluate_reads_labels_csv_and_shows_the_worst_misses(model, fresh, tmp_path):
    tf_files, _ = model
    folder = tmp_path / "checked"
    truths = {}
    for photo, labels in fresh.items():
        truths[folder / photo.name] = labels
        (folder / photo.name).parent.mkdir(exist_ok=True)
        (folder / photo.name).write_bytes(photo.read_bytes())
    wrong = folder / "photo_1.jpg"  # a circle, said to be a square
    truths[wrong] = ["square"]
    write_labels_csv(folder / "labels.csv", truths, folder)
    page = tmp_path / "checked.html"
    result = in_process("evaluate", tf_files, folder, "--json", "--report", page)
    evaluation = json.loads(result.stdout)
    assert evaluation["task"] == "multi-label" and evaluation["count"] == 8
    assert [row["label"] for row in evaluation["per_label"]] == SHAPES
    assert all(row["threshold"] is not None for row in evaluation["per_label"])
    assert "confusion" not in evaluation
    (miss,) = [miss for miss in evaluation["misses"] if Path(miss["path"]) == wrong]
    assert miss["truth"] == ["square"] and miss["given"] == ["circle"]
    assert re.search(r"^Micro-F1 = [\d.]+, mAP = [\d.]+ \(N=8\)$", result.stderr, re.M)
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 1  # the precision-recall curves
    assert "photo_1.jpg" in text and text.count('alt="evidence for ') >= 1


def test_export_keeps_the_sigmoids_and_thresholds_for_litert_onnx_and_mediapipe(
    model, classifier, fresh, tmp_path
):
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from tensorguess.classify.exported import ExportedClassifier
    from tensorguess.data.images import load_pixels

    tf_files, _ = model
    output = tmp_path / "export"
    in_process("export", tf_files, "--format", "tflite,onnx", "--output", output)
    photos = list(fresh)
    ours = list(classifier.classify(photos))
    thresholds = np.array(classifier.task.thresholds)
    for name in ("model.tflite", "model.onnx"):
        exported = ExportedClassifier(output / name)
        assert exported.task.multi_label, name
        np.testing.assert_allclose(exported.task.thresholds, thresholds, atol=1e-9)
        for mine, theirs in zip(ours, exported.classify(photos), strict=True):
            # float32 here, bfloat16 in guess.sh on CPUs with AMX: the same labels but where
            # a score is that close to its threshold.
            np.testing.assert_allclose(theirs.scores, mine.scores, atol=0.02)
            if np.abs(mine.scores - thresholds).min() > 0.02:
                assert theirs.labels == mine.labels, name
    tflite = list(ExportedClassifier(output / "model.tflite").classify(photos))
    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(output / "model.tflite"))
    )
    size = classifier.image_size
    with vision.ImageClassifier.create_from_options(options) as mediapipe:
        for photo, theirs in zip(photos, tflite, strict=True):
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=load_pixels(photo, size))
            (head,) = mediapipe.classify(image).classifications
            # The metadata's score threshold (0.5, on each score calibrated to its label's
            # threshold): MediaPipe returns the labels the file gives, and no others.
            assert sorted(c.category_name for c in head.categories) == sorted(theirs.labels)


def test_the_server_answers_as_the_exported_serving_model_does(model, fresh, tmp_path):
    """TF Serving's :predict gives a multi-label model's `over_threshold` beside its scores,
    as the exported SavedModel's signature does; /v1/guess gives each photo's labels."""
    from test_serve import KEY, b64, multipart, start_server

    tf_files, _ = model
    process, port = start_server(tf_files, tmp_path / "serve.log", tmp_path)
    try:
        photos = list(fresh)
        guessed = json.loads(in_process("guess", tf_files, *photos, "--json").stdout)

        def call(path: str, body: bytes, headers: dict) -> dict:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            connection.request("POST", path, body, {**headers, "Authorization": f"Bearer {KEY}"})
            response = connection.getresponse()
            assert response.status == 200
            return json.loads(response.read())

        instances = json.dumps({"instances": [{"b64": b64(photo)} for photo in photos]}).encode()
        predicted = call("/v1/models/model:predict", instances, {})["predictions"]
        body, headers = multipart([(photo.name, photo.read_bytes()) for photo in photos])
        answered = call("/v1/guess", body, headers)
    finally:
        process.terminate()
        process.wait(timeout=60)
    for row, guess, answer in zip(predicted, guessed, answered, strict=True):
        flags = zip(row["classes"], row["over_threshold"], strict=True)
        given = [label for label, over in flags if over]
        assert sorted(given) == sorted(guess["labels"])
        assert answer["labels"] == guess["labels"]
