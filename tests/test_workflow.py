"""The user's workflow through the real scripts: train.sh, guess.sh, guessDir.sh."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil

from helpers import (
    LABELS,
    draw_photos,
    in_process,
    make_tf_files,
    one_line_error,
    tensorguess,
    wrapper,
)

SCORE_LINE = re.compile(r"^(\S+) \(score = (\d\.\d{5})\)$")


def test_train_writes_the_model_and_reports_accuracy(trained):
    tf_files, result = trained
    for name in ("retrained_graph.pb", "retrained_labels.txt", "tensorguess.json"):
        assert (tf_files / name).stat().st_size > 0
    assert (tf_files / "saved_model" / "saved_model.pb").is_file()
    assert (tf_files / "retrained_labels.txt").read_text().splitlines() == list(LABELS)
    match = re.search(r"^Final test accuracy = ([\d.]+)% \(N=(\d+)\)$", result.stdout, re.M)
    assert match, result.stdout
    assert float(match.group(1)) >= 90 and int(match.group(2)) > 0
    metadata = json.loads((tf_files / "tensorguess.json").read_text())
    assert metadata["labels"] == list(LABELS)
    assert metadata["backbone"] == "efficientnet_lite0" and metadata["image_size"] == 224
    assert "Traceback" not in result.stderr


def test_second_run_reuses_every_feature_and_a_new_photo_costs_one(trained_copy):
    # The head-only preset: the cache is the point here, not fine-tuning's minutes.
    # One run shows both: every old photo's features reused, the new photo's computed.
    # In this process and without report.html: what the cache serves is the same, and the
    # session's train.sh run already went through the script.
    fast = ("--testing_percentage", "20", "--preset", "fast", "--no_report")
    draw_photos(trained_copy / "data" / "circle", "circle", 1, seed=99)
    again = in_process("train", trained_copy, *fast)
    assert re.search(r"^Features: 1 computed, 48 from cache", again.stdout, re.M), again.stdout


def test_guess_prints_every_label_best_first(trained, tmp_path):
    tf_files, _ = trained
    (photo,) = draw_photos(tmp_path, "square", 1, seed=7)
    result = wrapper("guess.sh", tf_files, photo)
    lines = result.stdout.splitlines()
    matches = [SCORE_LINE.match(line) for line in lines]
    assert all(matches) and len(lines) == len(LABELS), result.stdout
    assert matches[0].group(1) == "square"
    scores = [float(match.group(2)) for match in matches]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-3


def test_guess_top_k_and_json_with_relative_paths(trained, tmp_path):
    tf_files, _ = trained
    draw_photos(tmp_path / "photos", "circle", 2, seed=8)
    shutil.copytree(tf_files, tmp_path / "model", symlinks=True)
    names = sorted(path.name for path in (tmp_path / "photos").iterdir())
    top = wrapper("guess.sh", "model", f"photos/{names[0]}", "--top_k", "1", cwd=tmp_path)
    assert SCORE_LINE.match(top.stdout.strip()).group(1) == "circle"
    result = wrapper(
        "guess.sh", "model", *(f"photos/{name}" for name in names), "--json", cwd=tmp_path
    )
    answers = json.loads(result.stdout)
    assert [answer["image"] for answer in answers] == [f"photos/{name}" for name in names]
    assert all(answer["predictions"][0]["label"] == "circle" for answer in answers)


def _digests(folder):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir()}


def test_guess_dir_sorts_copies_and_never_overwrites(trained, tmp_path):
    tf_files, _ = trained
    source = tmp_path / "unsorted"
    draw_photos(source, "circle", 3, seed=11, prefix="photo a")
    draw_photos(source, "square", 3, seed=12, prefix="photo b")
    (source / "notes.txt").write_text("not a photo")
    before = _digests(source)
    destination = tmp_path / "sorted" / "deeper"

    result = wrapper("guessDir.sh", tf_files, source, destination)

    sorted_files = sorted(p.name for p in destination.iterdir() if p.name != "manifest.csv")
    assert len(sorted_files) == 6
    assert all(re.fullmatch(r"(circle|square)-\d\.\d{5}(-\d+)?\.jpg", n) for n in sorted_files)
    assert sum(name.startswith("circle") for name in sorted_files) == 3
    with open(destination / "manifest.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 6
    assert set(rows[0]) == {"source", "destination", "label", "score", "sha256", *LABELS}
    for row in rows:
        assert (destination / row["destination"].rsplit("/", 1)[1]).is_file()
        assert row["label"] in row["destination"] and row["label"] in ("circle", "square")
    assert "notes.txt" in result.stdout and "not an image" in result.stdout
    assert _digests(source) == before

    # A second run into the same DEST keeps the first run's files and copies nothing twice;
    # a new photo is sorted beside them.
    first = _digests(destination)
    (new,) = draw_photos(source, "square", 1, seed=14, prefix="photo c")
    wrapper("guessDir.sh", tf_files, source, destination)
    second = _digests(destination)
    assert len(second) == len(first) + 1
    assert all(second[name] == digest for name, digest in first.items() if name != "manifest.csv")
    assert sorted(set(second.values()) - set(first.values()) - {second["manifest.csv"]}) == [
        hashlib.sha256(new.read_bytes()).hexdigest()
    ]
    before[new.name] = _digests(source)[new.name]
    assert _digests(source) == before


def test_guess_dir_relative_paths(trained, tmp_path):
    shutil.copytree(trained[0], tmp_path / "model", symlinks=True)
    draw_photos(tmp_path / "in", "square", 2, seed=13)
    wrapper("guessDir.sh", "model", "in", "out", cwd=tmp_path)
    assert len(list((tmp_path / "out").glob("square-*.jpg"))) == 2
    draw_photos(tmp_path / "one", "circle", 1, seed=13)
    single = wrapper("guessDir.sh", "model", "one", "out", cwd=tmp_path)
    assert "Sorted 1 image into out (circle 1)" in single.stdout


def test_guess_dir_into_a_file_says_so(trained, tmp_path):
    draw_photos(tmp_path / "in", "square", 1, seed=13)
    (tmp_path / "sorted").write_text("my notes")
    result = wrapper("guessDir.sh", trained[0], tmp_path / "in", tmp_path / "sorted", check=False)
    one_line_error(result, "sorted: DEST is a file, not a folder")
    assert (tmp_path / "sorted").read_text() == "my notes"


def test_empty_data_folder_is_one_clear_line(tmp_path):
    (tmp_path / "tf_files" / "data").mkdir(parents=True)
    result = wrapper("train.sh", tmp_path / "tf_files", check=False)
    one_line_error(result, "no images found", "data")


def test_single_label_is_one_clear_line_naming_the_empty_folder(tmp_path):
    draw_photos(tmp_path / "tf_files" / "data" / "circle", "circle", 3, seed=1)
    (tmp_path / "tf_files" / "data" / "square").mkdir()
    result = wrapper("train.sh", tmp_path / "tf_files", check=False)
    one_line_error(result, "only one label (circle)", "label folders have no images: square")


def test_missing_image_is_one_clear_line(trained, tmp_path):
    result = wrapper("guess.sh", trained[0], tmp_path / "nowhere.jpg", check=False)
    one_line_error(result, "nowhere.jpg", "not found")


def test_unreadable_model_is_one_clear_line(trained_copy, tmp_path):
    graph = trained_copy / "retrained_graph.pb"
    graph.write_bytes(graph.read_bytes()[:1000])
    (photo,) = draw_photos(tmp_path, "circle", 1, seed=3)
    result = wrapper("guess.sh", trained_copy, photo, check=False)
    one_line_error(result, "retrained_graph.pb", "train again")
    # An empty graph too, in this process: each damaged graph costs a TensorFlow import in
    # a process of its own, and guess.sh's way to the one line was shown just above.
    graph.write_bytes(b"")
    one_line_error(in_process("guess", trained_copy, photo, check=False), "retrained_graph.pb")


def test_no_model_yet_is_one_clear_line(tmp_path):
    make_tf_files(tmp_path / "tf_files", per_label=1)
    (photo,) = draw_photos(tmp_path, "circle", 1, seed=4)
    result = wrapper("guess.sh", tmp_path / "tf_files", photo, check=False)
    one_line_error(result, "retrained_graph.pb", "train")


def test_labels_that_do_not_match_the_graph(trained_copy, tmp_path):
    (trained_copy / "retrained_labels.txt").write_text("circle\nsquare\ntriangle\n")
    (photo,) = draw_photos(tmp_path, "circle", 1, seed=5)
    result = wrapper("guess.sh", trained_copy, photo, check=False)
    one_line_error(result, "3 labels", "2 classes")


def test_scripts_explain_their_usage_in_their_own_names():
    for script in ("train.sh", "guess.sh", "guessDir.sh"):
        result = wrapper(script, check=False)
        assert result.returncode == 2 and "usage: bash " + script in result.stderr
        help_text = wrapper(script, "--help").stdout
        # The commands a user can type: not `tensorguess sort`, which is not on their PATH.
        assert help_text.startswith(f"usage: bash {script} ")
        assert f"  bash {script} ./tf_files" in help_text
        assert not re.search(r"tensorguess (train|guess|sort)\b", help_text)
        assert "TF_FILES the folder" in " ".join(help_text.split())
    assert "--validation_percentage" in wrapper("train.sh", "--help").stdout
    sort_help = " ".join(wrapper("guessDir.sh", "--help").stdout.split())
    for words in ("SRC the folder of images to sort", "DEST where the renamed copies"):
        assert words in sort_help


def test_sample_data_is_the_same_photos_for_the_same_seed(tmp_path):
    """Every photo drawn from a seed, noise included, so a run is reproducible (and the
    suite's drawn photos, and so their train/test split, are the same in every worker)."""
    digests = []
    for run in ("first", "second"):
        tensorguess("sample-data", tmp_path / run, "--per_label", "3")
        photos = sorted(path for path in (tmp_path / run).rglob("*.jpg"))
        assert len(photos) == 3 * 3 + 3 * 4
        digests.append([hashlib.sha256(path.read_bytes()).hexdigest() for path in photos])
    assert digests[0] == digests[1] and len(set(digests[0])) == len(digests[0])
    tensorguess("sample-data", tmp_path / "other", "--per_label", "3", "--seed", "1")
    other = sorted((tmp_path / "other").rglob("*.jpg"))
    assert hashlib.sha256(other[0].read_bytes()).hexdigest() not in digests[0]
