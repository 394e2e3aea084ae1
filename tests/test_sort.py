"""guessDir: safe names, never overwriting, every image sorted exactly once, --move, --min_score."""

from __future__ import annotations

import builtins
import csv
import errno
import hashlib
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import tensorflow as tf
from PIL import Image

from helpers import draw_photos
from tensorguess.classify import sort as sort_module
from tensorguess.classify.loading import load_classifier
from tensorguess.classify.sort import (
    Fingerprint,
    FreeNames,
    Manifest,
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


def _a_photo_and_a_taken_name(tmp_path: Path) -> tuple[Path, Path, FreeNames]:
    """A photo, and a DEST where `elsa-0.99000.jpg` is taken: (photo, DEST, its names)."""
    source = tmp_path / "photo.jpg"
    source.write_bytes(b"first")
    destination = tmp_path / "out"
    destination.mkdir()
    (destination / "elsa-0.99000.jpg").write_bytes(b"already here")
    return source, destination, FreeNames(destination)


def test_taken_names_get_a_number_and_nothing_is_overwritten(tmp_path):
    source, destination, names = _a_photo_and_a_taken_name(tmp_path)
    made = [copy_without_overwriting(source, names, "elsa-0.99000.jpg").path for _ in range(2)]
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


def _manifest_rows(destination: Path, manifest: str = "manifest.csv") -> list[list[str]]:
    with open(destination / manifest, newline="", errors="surrogateescape") as stream:
        header, *rows = list(csv.reader(stream))
    assert header[:5] == ["source", "destination", "label", "score", "sha256"]
    return rows


def _names_tell_their_rows(destination: Path, manifest: str = "manifest.csv") -> None:
    """Each listed copy's name tells the label and score its manifest line records."""
    for row in _manifest_rows(destination, manifest):
        name, label, score = Path(row[1]).name, row[2], float(row[3])
        expected = Path(sorted_name(label, score, Path(name).suffix))
        assert re.fullmatch(
            rf"(?:unsure-|unknown-)?{re.escape(expected.stem)}(?:-\d+)?{expected.suffix}", name
        ), (name, label, score)


@pytest.fixture
def held() -> Iterator[Callable[[Path], int]]:
    """`held(path)`: the file's inode number, the file kept open until the test ends so that
    the number cannot be reused (a copy made afresh could get that of a file just deleted)."""
    with ExitStack() as stack:
        yield lambda path: os.fstat(stack.enter_context(open(path, "rb")).fileno()).st_ino


def test_a_rerun_after_a_kill_between_copy_and_manifest_line_copies_nothing_twice(
    classifier, tmp_path, held
):
    source, destination = tmp_path / "in", tmp_path / "out"
    photos = draw_photos(source, "circle", 3, seed=31) + draw_photos(source, "square", 3, seed=32)
    assert len(sort_folder(classifier, source, destination).copied) == 6
    # What a run killed at the worst moment leaves: its last copy linked into DEST but its
    # manifest line cut short, and half a copy of a photo under a temporary name.
    manifest = destination / "manifest.csv"
    *whole, last = manifest.read_bytes().splitlines(keepends=True)
    manifest.write_bytes(b"".join(whole) + last[:30])
    orphan = destination / Path(last.decode().split(",")[1]).name
    orphan_inode = held(orphan)
    (destination / ".tmp-sort-999999999-x1").write_bytes(photos[0].read_bytes()[:200])
    before = _digests(destination)

    report = sort_folder(classifier, source, destination)

    assert len(report.already_sorted) == 5
    [(again, copy, _, _)] = report.copied
    assert again == Path(last.decode().split(",")[0])
    assert copy.stat().st_ino == orphan_inode  # the orphan was adopted, not copied again
    assert sorted(_digests(destination).values()) == sorted(before.values())
    rows = _manifest_rows(destination)
    assert sorted(row[0] for row in rows) == sorted(str(photo) for photo in photos)
    assert {row[4] for row in rows} == {file_digest(photo) for photo in photos}
    assert not list(destination.glob(".tmp-*"))
    _names_tell_their_rows(destination)


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
    listed = Fingerprint.of(photo.stat())
    reason = remove_verified_source(photo, copy, file_digest(photo), listed)
    assert "does not match" in reason and photo.read_bytes() == b"the only copy"
    photo.write_bytes(b"changed after hashing")
    reason = remove_verified_source(photo, copy, file_digest(copy), listed)
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


# Power cuts and kills: what reaches the disk before a source is removed, and what a killed
# run leaves behind.


@pytest.fixture
def file_events(monkeypatch) -> list[tuple[str, str]]:
    """Every link, fsync and unlink from here on, in order, with the path each touched."""
    events: list[tuple[str, str]] = []
    fsync, unlink, link = os.fsync, os.unlink, os.link

    def recording_fsync(handle: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{handle}")))
        fsync(handle)

    def recording_unlink(path, *args, **kwargs) -> None:
        events.append(("unlink", os.fspath(path)))
        unlink(path, *args, **kwargs)

    def recording_link(source, target, *args, **kwargs) -> None:
        link(source, target, *args, **kwargs)
        events.append(("link", os.fspath(target)))

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "unlink", recording_unlink)
    monkeypatch.setattr(os, "link", recording_link)
    return events


def _removed_after_syncs(
    events: list[tuple[str, str]], removed: Path, copy: Path | None, destination: Path
) -> bool:
    """Whether `removed` was unlinked only after DEST's folder, then its manifest, were
    fsynced (after `copy` got its name, when it got it in these events)."""
    removal = events.index(("unlink", str(removed)))
    start = events.index(("link", str(copy))) if copy is not None else -1
    between = [event for event in events[start + 1 : removal] if event[0] == "fsync"]
    folder = ("fsync", str(destination.resolve()))
    manifest = ("fsync", str((destination / "manifest.csv").resolve()))
    return folder in between and manifest in between[between.index(folder) :]


def test_move_puts_each_copy_s_name_and_line_on_disk_before_removing_its_source(
    classifier, tmp_path, monkeypatch, file_events
):
    # On btrfs, NFS or FUSE a file's fsync does not promise its name: without an fsync of
    # DEST's folder, a power cut after the source's removal could take the copy's name.
    monkeypatch.setattr(sort_module, "SYNC_EVERY", 2)
    source, destination = tmp_path / "in", tmp_path / "out"
    draw_photos(source, "circle", 3, seed=61)
    draw_photos(source, "square", 3, seed=62)

    report = sort_folder(classifier, source, destination, move=True)

    assert report.moved == 6 and not list(source.iterdir())
    for original, copy, _, _ in report.copied:
        assert _removed_after_syncs(file_events, original, copy, destination), original
    # One fsync of the folder for each batch of two copies (and one as the sort begins), not
    # one per copy.
    folder_syncs = file_events.count(("fsync", str(destination.resolve())))
    assert folder_syncs == 1 + 6 // 2


def test_a_move_finishing_a_killed_one_syncs_before_removing(classifier, tmp_path, file_events):
    # A --move run killed after its copies were listed but before their names (and lines)
    # were synced: the next run must not remove a source before syncing them itself.
    source, destination = tmp_path / "in", tmp_path / "out"
    photos = draw_photos(source, "circle", 2, seed=63)
    sort_folder(classifier, source, destination)
    file_events.clear()

    report = sort_folder(classifier, source, destination, move=True)

    assert report.moved == 2 and not list(source.iterdir())
    for photo in photos:
        assert _removed_after_syncs(file_events, photo, None, destination), photo


def test_move_keeps_the_sources_when_dest_cannot_be_synced(classifier, tmp_path, monkeypatch):
    def failing(folder):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(sort_module, "sync_directory", failing)
    source, destination = tmp_path / "in", tmp_path / "out"
    photos = draw_photos(source, "square", 2, seed=64)

    report = sort_folder(classifier, source, destination, move=True)

    assert report.moved == 0 and all(photo.exists() for photo in photos)
    assert len(report.copied) == 2 and len(_manifest_rows(destination)) == 2
    assert sorted(reason for _, reason in report.skipped) == 2 * [
        f"left in SRC: {destination} cannot be synced to disk (Input/output error)"
    ]


def test_temporaries_a_killed_run_left_are_sorted_out_never_deleted_unread(
    classifier, tmp_path, held
):
    source, destination = tmp_path / "in", tmp_path / "out"
    first = draw_photos(source, "circle", 2, seed=65)
    sort_folder(classifier, source, destination)
    listed_copy = destination / Path(_manifest_rows(destination)[0][1]).name
    complete, half = draw_photos(source, "square", 2, seed=66)
    gone = draw_photos(tmp_path / "elsewhere", "circle", 1, seed=67)[0]
    damaged = b"\xff\xd8\xff\xe0 not a photo after all"
    temporaries = {
        "complete": complete.read_bytes(),  # killed after writing and fsyncing, before naming
        "gone": gone.read_bytes(),  # its photo left SRC since: the one place it still is
        "half": half.read_bytes()[:1000],  # killed mid-copy
        "duplicate": listed_copy.read_bytes(),  # a listed copy holds these very bytes
        "damaged": damaged,  # matches nothing and is no image
        "empty": b"",  # killed right after creating it
    }
    for name, data in temporaries.items():
        (destination / f".tmp-sort-{name}").write_bytes(data)
    os.link(listed_copy, destination / ".tmp-sort-second-name")  # killed before dropping it
    inodes = {name: held(destination / f".tmp-sort-{name}") for name in temporaries}

    report = sort_folder(classifier, source, destination)

    assert not list(destination.glob(".tmp-*"))
    by_inode = {path.stat().st_ino: path for path in destination.iterdir()}
    assert file_digest(by_inode[inodes["complete"]]) == file_digest(complete)  # adopted
    kept = by_inode[inodes["gone"]]
    rows = {row[1]: row for row in _manifest_rows(destination)}
    row = rows[str(kept)]
    assert row[0] == str((destination / ".tmp-sort-gone").resolve())
    assert row[4] == file_digest(gone) == file_digest(kept)
    assert kept.name.startswith(f"{row[2]}-{row[3]}") and kept.suffix == ".jpg"
    recovered = by_inode[inodes["damaged"]]
    assert recovered.name == "recovered-" + hashlib.sha256(damaged).hexdigest()[:16]
    assert recovered.read_bytes() == damaged
    assert [(path.name, "kept as recovered-" in reason) for path, reason in report.skipped] == [
        (".tmp-sort-damaged", True)
    ]
    # Every photo once: the two sorted before, the two sorted now, the one only the
    # temporary held; the damaged bytes beside them.
    photos = [*first, complete, half, gone]
    assert sorted(_digests(destination).values()) == sorted(
        [*map(file_digest, photos), hashlib.sha256(damaged).hexdigest()]
    )
    assert sorted(row[4] for row in rows.values()) == sorted(map(file_digest, photos))
    _names_tell_their_rows(destination)


KILL_AT_LINK = """
import os, signal, sys
from pathlib import Path
from tensorguess.classify.loading import load_classifier
from tensorguess.classify.sort import sort_folder

link, after = os.link, sys.argv[4] == "after"
def dying_link(source, target, *args, **kwargs):
    if Path(target).name.startswith("square"):
        if after:
            link(source, target, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    return link(source, target, *args, **kwargs)
os.link = dying_link
sort_folder(load_classifier(Path(sys.argv[1])), Path(sys.argv[2]), Path(sys.argv[3]))
"""


@pytest.mark.parametrize("moment", ["before", "after"])
def test_a_sort_killed_as_it_names_a_copy_is_finished_by_the_next(
    trained, classifier, tmp_path, moment, held
):
    source, destination = tmp_path / "in", tmp_path / "out"
    photos = draw_photos(source, "circle", 2, seed=68) + draw_photos(source, "square", 1, seed=69)
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AT_LINK, trained[0], source, destination, moment],
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL
    [temporary] = destination.glob(".tmp-sort-*")  # the square's copy, complete and fsynced
    inode = held(temporary)
    assert len(_manifest_rows(destination)) == 2

    report = sort_folder(classifier, source, destination)

    assert [copy.stat().st_ino for _, copy, _, _ in report.copied] == [inode]  # not copied again
    assert not list(destination.glob(".tmp-*"))
    assert sorted(_digests(destination).values()) == sorted(map(file_digest, photos))
    assert len(_manifest_rows(destination)) == 3
    _names_tell_their_rows(destination)


def test_adopted_orphans_are_named_as_their_manifest_lines_say(classifier, tmp_path, held):
    source, destination = tmp_path / "in", tmp_path / "out"
    photos = draw_photos(source, "circle", 2, seed=70) + draw_photos(source, "square", 1, seed=71)
    sort_folder(classifier, source, destination, min_score=1.0)  # every copy named unsure-*
    # Killed before any line reached the disk: three orphans, one of them under two names
    # (a rename killed halfway).
    (destination / "manifest.csv").unlink()
    orphans = sorted(path for path in destination.iterdir() if path.name.startswith("unsure-"))
    os.link(orphans[0], destination / orphans[0].name.replace("unsure-", ""))
    inodes = sorted(map(held, orphans))

    report = sort_folder(classifier, source, destination)  # no --min_score now

    assert len(report.copied) == 3 and report.unsure == 0
    assert sorted(path.stat().st_ino for _, path, _, _ in report.copied) == inodes
    assert not list(destination.glob("unsure-*"))
    assert sorted(_digests(destination).values()) == sorted(map(file_digest, photos))
    _names_tell_their_rows(destination)


class _ChangingSource:
    """The classifier, but one source is rewritten after it was classified, before its copy."""

    def __init__(self, classifier, victim: Path, replacement: bytes) -> None:
        self.inner, self.victim, self.replacement = classifier, victim, replacement
        self.labels = classifier.labels
        self.graph_path = classifier.graph_path
        self.novelty_threshold = classifier.novelty_threshold

    def classify(self, paths, batch_size=64):
        for prediction in self.inner.classify(paths, batch_size):
            if prediction.path == self.victim:
                self.victim.write_bytes(self.replacement)
            yield prediction


@pytest.mark.parametrize("sorted_before", [False, True])
def test_a_source_changed_before_its_copy_is_left_for_a_rerun(classifier, tmp_path, sorted_before):
    # Whether hashed up front (listed before by path, then changed: sorted again) or only
    # as it is copied, a copy must be of the bytes that were classified.
    source, destination = tmp_path / "in", tmp_path / "out"
    victim, other = draw_photos(source, "circle", 2, seed=72)
    first, second = draw_photos(tmp_path / "new", "square", 2, seed=73)
    if sorted_before:
        sort_folder(classifier, source, destination)
        victim.write_bytes(first.read_bytes())
    before = set(_digests(destination).values()) if destination.exists() else set()
    expected = set() if sorted_before else {file_digest(other)}
    changing = _ChangingSource(classifier, victim, second.read_bytes())

    report = sort_folder(changing, source, destination, move=True)

    assert report.skipped == [(victim, "changed while it was copied; run again")]
    assert victim.read_bytes() == second.read_bytes() and not list(destination.glob(".tmp-*"))
    assert set(_digests(destination).values()) - before == expected
    assert file_digest(victim) not in {row[4] for row in _manifest_rows(destination)}
    rerun = sort_folder(classifier, source, destination)
    assert [path for path, _, _, _ in rerun.copied] == [victim]
    assert file_digest(rerun.copied[0].destination) == file_digest(second)


@pytest.mark.parametrize(
    "refusal", [errno.EPERM, errno.EXDEV, errno.EMLINK], ids=["EPERM", "EXDEV", "EMLINK"]
)
def test_without_hard_links_each_copy_is_made_once_without_overwriting(
    classifier, tmp_path, monkeypatch, refusal
):
    def refusing_link(*args, **kwargs):
        raise OSError(refusal, os.strerror(refusal))

    monkeypatch.setattr(os, "link", refusing_link)
    photo, destination, names = _a_photo_and_a_taken_name(tmp_path)

    made = copy_without_overwriting(photo, names, "elsa-0.99000.jpg")
    moved = names.move(made.path, "anna-0.50000.jpg")

    assert (made.path.name, moved.name) == ("elsa-0.99000-1.jpg", "anna-0.50000.jpg")
    assert made.digest == file_digest(photo) == file_digest(moved)
    assert (destination / "elsa-0.99000.jpg").read_bytes() == b"already here"
    assert sorted(path.name for path in destination.iterdir()) == [
        "anna-0.50000.jpg",
        "elsa-0.99000.jpg",
    ]
    # A whole sort, and a rerun after a kill that left an orphan under a wrong name.
    source, out = tmp_path / "in", tmp_path / "sorted"
    photos = draw_photos(source, "circle", 2, seed=74)
    sort_folder(classifier, source, out)
    (out / "manifest.csv").unlink()
    orphan = next(out.glob("circle-*"))
    orphan.rename(out / orphan.name.replace("circle-", "unsure-circle-"))
    sort_folder(classifier, source, out)
    assert sorted(_digests(out).values()) == sorted(map(file_digest, photos))
    assert not list(out.glob(".tmp-*")) and not list(out.glob("unsure-*"))
    _names_tell_their_rows(out)


# Large folders: what a sort reads.


def test_a_sort_reads_each_photo_twice_and_a_rerun_once(classifier, tmp_path, monkeypatch):
    source, destination = tmp_path / "in", tmp_path / "out"
    photos = draw_photos(source, "circle", 2, seed=75) + draw_photos(source, "square", 2, seed=76)
    opened: list[str] = []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, str | os.PathLike) and Path(file).parent == source:
            opened.append(Path(file).name)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    sort_folder(classifier, source, destination)
    # Decoded, then copied (hashed as it is copied): no separate pass to hash it first.
    assert Counter(opened) == {photo.name: 2 for photo in photos}
    opened.clear()
    assert len(sort_folder(classifier, source, destination).already_sorted) == 4
    assert Counter(opened) == {photo.name: 1 for photo in photos}  # hashed: is it the same?


def _bytes_read() -> int:
    """Bytes this process has read so far, from any file (Linux's count)."""
    counts = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(counts["rchar"])


def test_a_rerun_reads_its_manifest_once(classifier, tmp_path):
    source, destination = tmp_path / "in", tmp_path / "out"
    draw_photos(source, "circle", 2, seed=77)
    sort_folder(classifier, source, destination)
    manifest = destination / "manifest.csv"
    with open(manifest, "a", newline="") as stream:  # a DEST that took 20,000 photos before
        writer = csv.writer(stream)
        for number in range(20_000):
            copy = destination / f"circle-0.90000-{number}.jpg"
            row = ["/elsewhere/{number}.jpg", copy, "circle", "0.90000", f"{number:064x}"]
            writer.writerow([*row, "0.90000", "0.10000"])
    size = manifest.stat().st_size
    before = _bytes_read()

    report = sort_folder(classifier, source, destination)

    read = _bytes_read() - before
    assert len(report.already_sorted) == 2 and not report.copied
    assert size <= read < 1.5 * size, (read, size)


def test_a_manifest_cut_by_a_power_cut_loses_only_its_cut_line(tmp_path):
    labels = ["circle", "square"]
    manifest = Manifest(tmp_path, labels)
    manifest.add(tmp_path / "a.jpg", tmp_path / "circle-0.90000.jpg", "circle", "ab", [0.9, 0.1])
    manifest.close()
    whole = (tmp_path / "manifest.csv").read_bytes()
    for cut in (b"/x/b.jpg,/y/square-0.8", b"x" * 200_000):  # the second longer than a block
        (tmp_path / "manifest.csv").write_bytes(whole + cut)
        reopened = Manifest(tmp_path, labels)
        reopened.add(
            tmp_path / "c.jpg", tmp_path / "square-0.70000.jpg", "square", "cd", [0.3, 0.7]
        )
        reopened.close()
        rows = _manifest_rows(tmp_path)
        assert [Path(row[0]).name for row in rows] == ["a.jpg", "c.jpg"]
    (tmp_path / "manifest.csv").write_bytes(b"source,destination,la")  # the header cut short
    Manifest(tmp_path, labels).close()
    assert (tmp_path / "manifest.csv").read_bytes() == whole.splitlines(keepends=True)[0]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["manifest.csv"]


# Manifests of several models in one DEST.


def _colour_photos(folder: Path) -> list[Path]:
    """A red, a green and a blue square, as PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, colour in enumerate([(250, 0, 0), (0, 250, 0), (0, 0, 250)]):
        Image.new("RGB", (40, 40), colour).save(folder / f"{number}.png", format="PNG")
        paths.append(folder / f"{number}.png")
    return paths


def test_each_model_keeps_its_own_manifest_and_a_rerun_reads_it(tmp_path):
    first = load_classifier(_colour_graph(tmp_path / "rgb", ["red", "green", "blue"]))
    second = load_classifier(_colour_graph(tmp_path / "ish", ["reddish", "greenish", "bluish"]))
    source, destination = tmp_path / "in", tmp_path / "out"
    _colour_photos(source)
    assert sort_folder(first, source, destination).manifest == destination / "manifest.csv"

    report = sort_folder(second, source, destination)  # other labels: a manifest of its own

    assert report.manifest == destination / "manifest-1.csv" and len(report.copied) == 3
    rows = _manifest_rows(destination, "manifest-1.csv")
    assert [row[2] for row in rows] == ["reddish", "greenish", "bluish"]
    for model, manifest in ((second, "manifest-1.csv"), (first, "manifest.csv")):
        again = sort_folder(model, source, destination)
        assert (again.manifest.name, len(again.already_sorted), again.copied) == (manifest, 3, [])
        _names_tell_their_rows(destination, manifest)
    assert sorted(path.name for path in destination.glob("manifest*")) == [
        "manifest-1.csv",
        "manifest.csv",
    ]
    assert len(_digests(destination)) == 6


def test_a_manifest_a_power_cut_left_empty_is_begun_again(tmp_path):
    model = load_classifier(_colour_graph(tmp_path / "rgb", ["red", "green", "blue"]))
    source, destination = tmp_path / "in", tmp_path / "out"
    _colour_photos(source)
    destination.mkdir()
    (destination / "manifest.csv").touch()  # created, but its header never reached the disk

    report = sort_folder(model, source, destination)

    assert report.manifest == destination / "manifest.csv"
    assert [row[2] for row in _manifest_rows(destination)] == ["red", "green", "blue"]
    assert sorted(path.name for path in destination.glob("manifest*")) == ["manifest.csv"]
