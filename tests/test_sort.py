"""guessDir: safe names, never overwriting, every image sorted exactly once, --move, --min_score."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import tensorflow as tf
from PIL import Image

from helpers import draw_photos
from tensorguess.classify.loading import load_classifier
from tensorguess.classify.sort import (
    FreeNames,
    copy_without_overwriting,
    remove_verified_source,
    safe_name_part,
    sort_folder,
    sorted_name,
)
from tensorguess.errors import TensorguessError
from tensorguess.files import file_digest, folder_lock


def test_sorted_name_keeps_the_original_format():
    assert sorted_name("elsa", 0.996361, ".JPG") == "elsa-0.99636.jpg"
    assert sorted_name("darth_vader", 1.0, ".png") == "darth_vader-1.00000.png"


def test_labels_cannot_escape_the_destination():
    labels = ("../../etc", "a/b", "a\\b", "..", ".", "tab\there", "line\nbreak", "", ".bashrc")
    for label in (*labels, "\x85next line\u2028", "é" * 200):
        part = safe_name_part(label)
        assert "/" not in part and "\\" not in part and part not in ("", ".", "..")
        assert part.isprintable() and not part.startswith(".")
        assert len(part.encode()) <= 180  # room for the score, a counter and the extension
    assert safe_name_part("é" * 200) == "é" * 90  # cut between characters, never inside one
    assert sorted_name("a", 0.5, ".JPEG") == "a-0.50000.jpeg"
    for hostile in (".jp\ng", "./../x", ".tar.gz/..", "." + "x" * 40):
        assert sorted_name("a", 0.5, hostile) == "a-0.50000"
    assert sorted_name("a", 0.5, ".jpg", unsure=True) == "unsure-a-0.50000.jpg"


def test_taken_names_get_a_number_and_nothing_is_overwritten(tmp_path):
    source = tmp_path / "photo.jpg"
    source.write_bytes(b"first")
    destination = tmp_path / "out"
    destination.mkdir()
    (destination / "elsa-0.99000.jpg").write_bytes(b"already here")
    names = FreeNames(destination)
    made = [copy_without_overwriting(source, names, "elsa-0.99000.jpg") for _ in range(2)]
    assert [path.name for path in made] == ["elsa-0.99000-1.jpg", "elsa-0.99000-2.jpg"]
    assert (destination / "elsa-0.99000.jpg").read_bytes() == b"already here"
    assert sorted(p.name for p in destination.iterdir()) == [
        "elsa-0.99000-1.jpg",
        "elsa-0.99000-2.jpg",
        "elsa-0.99000.jpg",
    ]


def test_many_photos_with_one_name_cost_a_linear_number_of_attempts(tmp_path, monkeypatch):
    # 5,000 copies of one photo all want `label-1.00000.jpg`: trying -1, -2, ... from the
    # start for each would take 12.5 million attempts.
    attempts = []
    link = os.link

    def counting_link(source, target, *args, **kwargs):
        attempts.append(target)
        return link(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "link", counting_link)
    source = tmp_path / "photo.jpg"
    source.write_bytes(b"the same photo")
    destination = tmp_path / "out"
    destination.mkdir()
    count = 300
    names = FreeNames(destination)
    for _ in range(count):
        copy_without_overwriting(source, names, "circle-1.00000.jpg")
    assert len(attempts) == count
    # A later run into the same DEST looks past the taken names once, not once per photo.
    attempts.clear()
    names = FreeNames(destination)
    for _ in range(count):
        copy_without_overwriting(source, names, "circle-1.00000.jpg")
    assert len(attempts) == 2 * count
    assert len(list(destination.glob("circle-1.00000*.jpg"))) == 2 * count


# Sorting whole folders, in-process with the session's model (fast: no interpreter start).


@pytest.fixture(scope="module")
def classifier(trained):
    return load_classifier(trained[0])


def _digests(folder: Path) -> dict[str, str]:
    """sha256 of every sorted image in `folder` (not the manifest, lock or temporaries)."""
    return {
        path.name: file_digest(path)
        for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".") and not path.name.endswith(".csv")
    }


def _manifest_rows(destination: Path) -> list[list[str]]:
    with open(destination / "manifest.csv", newline="", errors="surrogateescape") as stream:
        header, *rows = list(csv.reader(stream))
    assert header[:5] == ["source", "destination", "label", "score", "sha256"]
    return rows


def test_a_rerun_after_a_kill_between_copy_and_manifest_line_copies_nothing_twice(
    classifier, tmp_path
):
    source, destination = tmp_path / "in", tmp_path / "out"
    photos = draw_photos(source, "circle", 3, seed=31) + draw_photos(source, "square", 3, seed=32)
    assert len(sort_folder(classifier, source, destination).copied) == 6
    # What a run killed at the worst moment leaves: its last copy linked into DEST but its
    # manifest line cut short, and a temporary copy of a run that died.
    manifest = destination / "manifest.csv"
    *whole, last = manifest.read_bytes().splitlines(keepends=True)
    manifest.write_bytes(b"".join(whole) + last[:30])
    orphan = destination / Path(last.decode().split(",")[1]).name
    (destination / ".tmp-sort-999999999-x1").write_bytes(b"half a copy")
    before = _digests(destination)

    report = sort_folder(classifier, source, destination)

    assert len(report.already_sorted) == 5
    assert [(source, copy) for source, copy, _, _ in report.copied] == [
        (Path(last.decode().split(",")[0]), orphan)
    ]
    assert _digests(destination) == before  # the orphan was adopted, not copied again
    rows = _manifest_rows(destination)
    assert sorted(row[0] for row in rows) == sorted(str(photo) for photo in photos)
    assert {row[4] for row in rows} == {file_digest(photo) for photo in photos}
    assert not list(destination.glob(".tmp-*"))


def test_move_deletes_a_source_only_after_its_copy_is_verified(classifier, tmp_path):
    source, destination = tmp_path / "in", tmp_path / "out"
    photos = draw_photos(source, "circle", 2, seed=33) + draw_photos(source, "square", 2, seed=34)
    originals = {photo.name: file_digest(photo) for photo in photos}

    report = sort_folder(classifier, source, destination, move=True)

    assert report.moved == 4 and not list(source.iterdir())
    assert sorted(_digests(destination).values()) == sorted(originals.values())


def test_move_after_a_copy_run_finishes_the_move(classifier, tmp_path):
    # A --move run killed after its manifest lines but before removing the sources.
    source, destination = tmp_path / "in", tmp_path / "out"
    draw_photos(source, "circle", 2, seed=35)
    sort_folder(classifier, source, destination)
    report = sort_folder(classifier, source, destination, move=True)
    assert (len(report.already_sorted), report.moved, len(report.copied)) == (2, 2, 0)
    assert not list(source.iterdir()) and len(_digests(destination)) == 2


def test_a_copy_that_does_not_match_keeps_its_source(tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"the only copy")
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(b"the only cop!")  # same size, different bytes
    stat = photo.stat()
    reason = remove_verified_source(photo, copy, file_digest(photo), stat.st_size, stat.st_mtime_ns)
    assert "does not match" in reason and photo.read_bytes() == b"the only copy"
    photo.write_bytes(b"changed after hashing")
    reason = remove_verified_source(photo, copy, file_digest(copy), stat.st_size, stat.st_mtime_ns)
    assert "changed" in reason and photo.exists()


def test_min_score_names_the_unsure(classifier, tmp_path):
    source = tmp_path / "in"
    draw_photos(source, "circle", 3, seed=36)
    draw_photos(source, "square", 3, seed=37)
    scores = sorted(
        float(prediction.scores.max())
        for prediction in classifier.classify(sorted(source.iterdir()))
    )
    threshold = (scores[2] + scores[3]) / 2  # three above, three under

    report = sort_folder(classifier, source, tmp_path / "out", min_score=threshold)

    assert report.unsure == 3
    for _, copied, label, score in report.copied:
        expected = f"unsure-{label}-" if score < threshold else f"{label}-"
        assert copied.name.startswith(expected), copied.name


def test_one_sort_at_a_time_into_a_destination(classifier, tmp_path):
    draw_photos(tmp_path / "in", "circle", 1, seed=38)
    (tmp_path / "out").mkdir()
    with folder_lock(tmp_path / "out", "sort"):
        with pytest.raises(TensorguessError, match=r"out: another sort is running on this folder"):
            sort_folder(classifier, tmp_path / "in", tmp_path / "out")
    assert len(sort_folder(classifier, tmp_path / "in", tmp_path / "out").copied) == 1


def _colour_graph(folder: Path, labels: list[str]) -> Path:
    """An old-tool-style graph that labels an image by its strongest channel (R, G, B)."""
    tf1 = tf.compat.v1
    with tf.Graph().as_default() as graph:
        images = tf1.placeholder(tf.float32, [1, 32, 32, 3], name="Placeholder")
        tf.nn.softmax(tf.reduce_mean(images, axis=[1, 2]) * 20.0, name="final_result")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "retrained_graph.pb").write_bytes(graph.as_graph_def().SerializeToString())
    (folder / "retrained_labels.txt").write_text("".join(f"{label}\n" for label in labels))
    return folder


HOSTILE_LABELS = [
    ["../../escaped", "..", "a/b\\c"],
    ["é" * 150, "\x1b[31mred\x07", ".hidden"],
]
# Source names, and the channel (hence the label) of the image each holds.
HOSTILE_SOURCES = {
    "evil\nname.png": 0,
    os.fsdecode(b"not utf-8 \xff.png"): 1,
    "x" * 240 + ".png": 2,
    "odd extension.p\x1bng": 0,
}


@pytest.mark.parametrize("labels", HOSTILE_LABELS)
def test_hostile_labels_and_source_names_stay_inside_dest(tmp_path, labels):
    model = _colour_graph(tmp_path / "model", labels)
    source = tmp_path / "in"
    source.mkdir()
    for name, channel in HOSTILE_SOURCES.items():
        colour = tuple(250 if band == channel else 0 for band in range(3))
        Image.new("RGB", (40, 40), colour).save(source / name, format="PNG")
    destination = tmp_path / "deep" / "out"
    outside_before = sorted(tmp_path.rglob("*"))

    report = sort_folder(load_classifier(model), source, destination)

    assert len(report.copied) == 4 and not report.skipped
    assert sorted(set(tmp_path.rglob("*")) - set(outside_before)) == sorted(
        [destination.parent, destination, *destination.iterdir()]
    )
    for original, copied, label, _ in report.copied:
        name = copied.name
        assert copied.parent == destination
        assert len(os.fsencode(name)) <= 255 and name.isprintable() and not name.startswith(".")
        assert name.endswith(".png") == original.name.endswith(".png"), name
        assert label == labels[HOSTILE_SOURCES[original.name]]
    rows = _manifest_rows(destination)
    assert [(row[0], row[2]) for row in rows] == [
        (str(original), label) for original, _, label, _ in report.copied
    ]
