"""Messy folders end to end, through the user's scripts: odd formats, broken files, hostile
names, killed and concurrent runs, foreign model files, exit codes."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import (
    ROOT,
    draw_photos,
    in_process,
    tensorguess,
    wrapper,
    write_broken,
    write_formats,
)
from tensorguess import cli
from tensorguess.classify.loading import load_classifier
from tensorguess.classify.sort import sort_folder
from tensorguess.cli import common, sample_data
from tensorguess.errors import TensorguessError


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


def _skipped_lines(output: str) -> dict[str, str]:
    """`  path: reason` lines after "Skipped N files:", by path."""
    _, _, listing = output.partition("Skipped ")
    lines = [line[2:] for line in listing.splitlines()[1:] if line.startswith("  ")]
    return dict(line.split(": ", 1) for line in lines)


def _reason(skipped: dict[str, str], path: Path) -> str:
    (reason,) = [reason for shown, reason in skipped.items() if shown.startswith(str(path))]
    return reason


def _until(condition, timeout: float = 120, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(step)


# train ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def messy_training(tmp_path_factory):
    """tf_files/data holding every odd and broken case, trained once through train.sh."""
    tf_files = tmp_path_factory.mktemp("messy") / "tf_files"
    data = tf_files / "data"
    draw_photos(data / "circle", "circle", 20, seed=3)
    formats = write_formats(data / "circle", "circle", 4)
    broken = write_broken(data / "circle")
    draw_photos(data / "square", "square", 8, seed=3)
    shutil.copy(data / "circle" / "circle_3_000.jpg", data / "square" / "copy.jpg")
    (data / "square" / ".DS_Store").write_bytes(b"\0\1")
    (data / "square" / "nested").mkdir()
    draw_photos(data / "line\nbreak", "circle", 2, seed=4)
    (data / "README.txt").write_text("my photos")
    before = checksums(data)
    result = wrapper("train.sh", tf_files, "--preset", "fast", check=False)
    return tf_files, formats, broken, before, result


def test_train_skips_and_names_every_broken_file(messy_training):
    tf_files, formats, broken, before, result = messy_training
    assert result.returncode == 0, result.stderr
    _no_traceback(result)
    skipped = _skipped_lines(result.stdout)
    data = tf_files / "data"
    for path, words in broken.values():
        assert words in _reason(skipped, path), (path, skipped)
    assert _reason(skipped, data / "square" / ".DS_Store") == "hidden file"
    assert "sub-folder" in _reason(skipped, data / "square" / "nested")
    assert "not in a label folder" in _reason(skipped, data / "README.txt")
    assert "line break" in _reason(skipped, data / "line")
    # Every format is read (the data check may still name them: they are near-duplicates).
    assert not [path for path in formats.values() if any(str(path) in shown for shown in skipped)]
    # Every format was used: 20 + 18 circles (and the two broken files that only fail
    # when decoded), 8 squares plus the copy.
    assert re.search(r"^Found 49 images of 2 labels", result.stdout, re.M), result.stdout
    assert checksums(data) == before  # train only reads the photos


def test_train_warns_about_small_labels_and_conflicting_copies(messy_training):
    _, _, _, _, result = messy_training
    assert re.search(r"^warning: label 'square' has only 9 images; 20 or more", result.stdout, re.M)
    (conflict,) = [line for line in result.stdout.splitlines() if "identical images" in line]
    assert "(circle, square)" in conflict and "circle_3_000.jpg" in conflict
    assert "copy.jpg" in conflict


def _model_files(tf_files: Path) -> dict[str, str]:
    return {
        name: digest
        for name, digest in checksums(tf_files).items()
        if not name.startswith(("data", "bottlenecks"))
    }


def test_interrupted_train_keeps_the_model_and_a_second_train_is_refused(trained_copy, tmp_path):
    model = _model_files(trained_copy)
    assert len(model) > 4
    draw_photos(trained_copy / "data" / "circle", "circle", 6, seed=41)
    lock = trained_copy / ".tensorguess.lock"
    fast = ("--preset", "fast")  # the lock and the interrupt are the point, not fine-tuning
    first = subprocess.Popen(
        ["bash", ROOT / "train.sh", trained_copy, *fast],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Ctrl-C reaches the whole process group
        # As from a terminal: a suite started in the background (`... &`) inherits SIGINT
        # ignored, and Python then leaves it ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        _until(lambda: lock.exists() and lock.read_text().strip() == str(first.pid))
        second = wrapper("train.sh", trained_copy, *fast, check=False)
        assert second.returncode == 1
        assert second.stderr.strip() == (
            f"tensorguess: error: {trained_copy}: another train is running on this folder "
            f"(process {first.pid}); wait for it to finish"
        )
        # Ctrl-C while the new model is being written.
        _until(lambda: any(trained_copy.glob(".tmp-export.*")))
        os.killpg(first.pid, signal.SIGINT)
        _, errors = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert first.returncode == 130, errors
    assert "interrupted; the previous model and the cache are intact" in errors
    assert _model_files(trained_copy) == model
    assert not list(trained_copy.glob(".tmp-*"))
    (photo,) = draw_photos(tmp_path, "square", 1, seed=42)
    assert wrapper("guess.sh", trained_copy, photo).stdout.startswith("square (score = ")

    # The next run: the lock is free, and damaged cache entries are found and recomputed.
    entries = sorted((trained_copy / "bottlenecks").rglob("*.npy"))
    entries[0].write_bytes(entries[0].read_bytes()[:100])
    entries[1].write_bytes(os.urandom(3000))
    np.save(entries[2], np.full(1280, np.nan, np.float32))
    np.save(entries[3], np.zeros(7, np.float32))
    # In this process: the interrupt and the refusal above needed processes of their own,
    # what the cache holds afterwards does not (a TensorFlow import and a report saved).
    again = in_process("train", trained_copy, *fast, "--no_report")
    assert re.search(r"^Features: 4 computed, 50 from cache", again.stdout, re.M), again.stdout
    assert _model_files(trained_copy) != model


# guessDir -------------------------------------------------------------------------------


def _manifest_rows(destination: Path) -> list[dict[str, str]]:
    with open(destination / "manifest.csv", newline="", errors="surrogateescape") as stream:
        return list(csv.DictReader(stream))


def _sorted_images(destination: Path) -> dict[str, str]:
    return {
        name: digest
        for name, digest in checksums(destination).items()
        if not name.startswith(".") and not name.endswith(".csv")
    }


def test_guess_dir_on_a_messy_folder(trained, tmp_path):
    tf_files, _ = trained
    source = tmp_path / "my photos"
    formats = write_formats(source, "circle", 1)
    squares = write_formats(source, "square", 2)
    broken = write_broken(source)
    (source / ".DS_Store").write_bytes(b"\0")
    (source / "holiday").mkdir()
    draw_photos(source / "holiday", "circle", 1, seed=5)
    shutil.copy(formats["jpeg"], source / "line\nbreak.jpg")
    shutil.copy(squares["png"], source / os.fsdecode(b"caf\xe9.png"))  # Latin-1, not UTF-8
    expected = {str(path): "circle" for path in formats.values()}
    expected |= {str(path): "square" for path in squares.values()}
    expected |= {str(source / "line\nbreak.jpg"): "circle"}
    expected |= {str(source / os.fsdecode(b"caf\xe9.png")): "square"}
    before = checksums(source)
    destination = tmp_path / "sorted"

    result = wrapper("guessDir.sh", tf_files, source, destination, check=False)

    assert result.returncode == 0, result.stderr
    _no_traceback(result)
    rows = _manifest_rows(destination)
    assert {row["source"]: row["label"] for row in rows} == expected  # every format, right label
    skipped = _skipped_lines(result.stdout)
    for path, words in broken.values():
        assert words in _reason(skipped, path)
    assert _reason(skipped, source / ".DS_Store") == "hidden file"
    assert "sub-folder" in _reason(skipped, source / "holiday")
    assert checksums(source) == before
    images = _sorted_images(destination)
    assert sorted(images) == sorted(Path(row["destination"]).name for row in rows)
    assert sorted(images.values()) == sorted(row["sha256"] for row in rows)
    assert sorted(images.values()) == sorted(before[str(Path(s).name)] for s in expected)

    # A second run into the same DEST: nothing copied twice, nothing touched.
    everything = checksums(destination)
    again = wrapper("guessDir.sh", tf_files, source, destination)
    assert f"Already sorted by an earlier run: {len(expected)}" in again.stdout
    assert re.search(r"^Sorted 0 images", again.stdout, re.M)
    assert checksums(destination) == everything  # the manifest too
    assert checksums(source) == before


def test_guess_dir_killed_midway_resumes_and_sorts_each_image_once(trained, tmp_path):
    tf_files, _ = trained
    source, destination = tmp_path / "in", tmp_path / "out"
    draw_photos(source, "circle", 15, seed=51)
    draw_photos(source, "square", 15, seed=52)
    before = checksums(source)
    first = subprocess.Popen(
        [sys.executable, "-m", "tensorguess", "sort", tf_files, source, destination]
        + ["--batch_size", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    manifest = destination / "manifest.csv"
    try:
        _until(lambda: manifest.exists() and manifest.read_bytes().count(b"\n") >= 5)
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait()
    assert first.returncode == -signal.SIGKILL  # killed, not finished
    done = len(_manifest_rows(destination))
    assert 4 <= done < 30

    again = wrapper("guessDir.sh", tf_files, source, destination)

    found = re.search(r"^Already sorted by an earlier run: (\d+)$", again.stdout, re.M)
    assert found and int(found.group(1)) >= done
    rows = _manifest_rows(destination)
    assert sorted(row["source"] for row in rows) == sorted(str(source / name) for name in before)
    images = _sorted_images(destination)
    assert sorted(images.values()) == sorted(before.values())  # each image once
    assert not list(destination.glob(".tmp-*"))
    assert checksums(source) == before


def test_guess_dir_move_and_min_score_through_the_script(trained, tmp_path):
    tf_files, _ = trained
    source = tmp_path / "in"
    photos = draw_photos(source, "square", 3, seed=61)
    digests = sorted(hashlib.sha256(photo.read_bytes()).hexdigest() for photo in photos)
    result = wrapper(
        "guessDir.sh", tf_files, source, tmp_path / "out", "--move", "--min_score", "1"
    )
    assert re.search(r"^Removed from .* after verifying their copies: 3$", result.stdout, re.M)
    assert not list(source.iterdir())
    images = _sorted_images(tmp_path / "out")
    assert sorted(images.values()) == digests
    assert all(name.startswith("unsure-square-") for name in images)  # no score reaches 1


# models ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("cut at 10%", "not a TensorFlow graph"),
        ("cut at 50%", "not a TensorFlow graph"),
        ("cut at 99.9%", "not a TensorFlow graph"),
        ("a PNG renamed", "not a TensorFlow graph"),
        ("a SavedModel's saved_model.pb", "a SavedModel's saved_model.pb, not a frozen graph"),
        ("a graph without final_result", "the graph has no tensor 'final_result'"),
    ],
)
def test_foreign_or_damaged_graphs_are_one_clear_line(trained_copy, case, words):
    import tensorflow as tf

    graph = trained_copy / "retrained_graph.pb"
    data = graph.read_bytes()
    if case.startswith("cut at"):
        share = float(case.split()[-1].rstrip("%")) / 100
        graph.write_bytes(data[: int(len(data) * share)])
    elif case == "a PNG renamed":
        from PIL import Image

        Image.new("RGB", (20, 20)).save(graph, format="PNG")
    elif case.startswith("a SavedModel"):
        shutil.copy(trained_copy / "saved_model" / "saved_model.pb", graph)
    else:
        with tf.Graph().as_default() as other:
            tf.identity(tf.compat.v1.placeholder(tf.float32, [1, 4], name="input"), name="logits")
        graph.write_bytes(other.as_graph_def().SerializeToString())
    with pytest.raises(TensorguessError) as refused:
        load_classifier(trained_copy)
    message = str(refused.value)
    assert message.startswith(f"{graph}: ") and words in message and "\n" not in message


@pytest.mark.parametrize("kept", [0, 0.999])
def test_a_cut_graph_is_refused_before_tensorflow_loads(trained_copy, kept):
    # The answer in about a second, not after a TensorFlow import of 6-12 s.
    graph = trained_copy / "retrained_graph.pb"
    graph.write_bytes(graph.read_bytes()[: int(graph.stat().st_size * kept)])
    script = (
        "import sys\n"
        "from tensorguess.classify.loading import load_classifier\n"
        "from tensorguess.errors import TensorguessError\n"
        "try:\n"
        f"    load_classifier({str(trained_copy)!r})\n"
        "except TensorguessError as error:\n"
        "    print(error)\n"
        "print(sorted({'tensorflow', 'openvino', 'keras'} & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    message, modules = result.stdout.splitlines()
    assert message.startswith(f"{graph}: ") and "not a TensorFlow graph" in message
    assert modules == "[]"


def test_labels_that_do_not_match_the_graph_stop_a_sort_before_any_copy(trained_copy, tmp_path):
    (trained_copy / "retrained_labels.txt").write_text("circle\n")
    draw_photos(tmp_path / "in", "circle", 2, seed=71)
    with pytest.raises(TensorguessError, match="1 labels, but the graph .* scores 2 classes"):
        sort_folder(load_classifier(trained_copy), tmp_path / "in", tmp_path / "out")
    assert _sorted_images(tmp_path / "out") == {}


def test_the_train_lock_is_taken_before_tensorflow_is_loaded(trained_copy, tmp_path):
    # A TensorFlow that takes a minute to import: a train holding the lock only after the
    # import would let a second train start meanwhile; ours is refused at once.
    slow = tmp_path / "slow" / "tensorflow"
    slow.mkdir(parents=True)
    (slow / "__init__.py").write_text("import time\ntime.sleep(90)\n")
    python_path = os.pathsep.join(filter(None, [str(slow.parent), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "tensorguess", "train", str(trained_copy), "--preset", "fast"]
    lock = trained_copy / ".tensorguess.lock"
    first = subprocess.Popen(
        command,
        env={**os.environ, "PYTHONPATH": python_path},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _until(lambda: lock.exists() and lock.read_text().strip() == str(first.pid), timeout=60)
        started = time.monotonic()
        second = tensorguess(*command[3:], check=False, PYTHONPATH=python_path)
        assert second.returncode == 1, second.stderr
        assert "another train is running on this folder" in second.stderr
        assert time.monotonic() - started < 60  # refused, not waiting for the slow import
    finally:
        first.kill()
        first.wait()


# exit codes -----------------------------------------------------------------------------


def test_exit_codes_are_as_documented(trained, tmp_path, monkeypatch, capsys):
    tf_files, _ = trained
    usage = tensorguess("sort", tf_files, tmp_path, check=False)  # DEST missing
    assert usage.returncode == 2 and "usage:" in usage.stderr
    score = tensorguess(
        "sort", tf_files, tmp_path, tmp_path / "out", "--min_score", "2", check=False
    )
    assert score.returncode == 2 and "must be between 0 and 1" in score.stderr

    def broken_command(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(sample_data, "run", broken_command)
    assert cli.main(["sample-data", str(tmp_path / "sample")]) == common.EXIT_BUG == 3
    assert capsys.readouterr().err == (
        "tensorguess: internal error: RuntimeError: a bug (rerun with --debug)\n"
    )
    # 130 (interrupted) is checked by test_interrupted_train_keeps_the_model...
