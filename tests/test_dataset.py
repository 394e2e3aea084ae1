"""Scanning data/: labels, the stable split, and what is skipped with a reason."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from helpers import draw_photos
from tensorguess.data.dataset import TEST, TRAIN, VALIDATION, scan_data, split_for
from tensorguess.errors import TensorguessError


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_split_is_stable_and_follows_the_percentages():
    files = [(Path(f"photo_{number}.jpg"), _digest(f"pixels {number}")) for number in range(4000)]
    splits = [split_for(path, digest, 10, 10) for path, digest in files]
    assert splits == [split_for(path, digest, 10, 10) for path, digest in files]
    for split, share in ((TRAIN, 0.8), (VALIDATION, 0.1), (TEST, 0.1)):
        assert abs(splits.count(split) / len(files) - share) < 0.03
    # The content decides: a renamed or moved photo keeps its split.
    renamed = {split_for(Path(f"{n}/copy_{n}.jpg"), _digest("same"), 10, 10) for n in range(50)}
    assert len(renamed) == 1
    # retrain.py's rule: "_nohash_" suffixes split with their base name, whatever the content.
    takes = {
        split_for(Path(f"dog_nohash_{n}.jpg"), _digest(f"take {n}"), 10, 10) for n in range(50)
    }
    assert len(takes) == 1


def test_a_duplicate_never_sits_in_two_splits(tmp_path):
    data = tmp_path / "data"
    photos = draw_photos(data / "circle", "circle", 40, seed=1)
    draw_photos(data / "square", "square", 3, seed=2)
    for number, photo in enumerate(photos):
        shutil.copy(photo, data / "square" / f"copy of {number}.jpg")

    scan = scan_data(data, 20, 20)

    splits: dict[str, set[str]] = {}
    for image in scan.images:
        assert image.digest == hashlib.sha256(image.path.read_bytes()).hexdigest()
        splits.setdefault(image.digest, set()).add(image.split)
    assert len(splits) == 43 and all(len(found) == 1 for found in splits.values())
    assert len({image.split for image in scan.images}) == 3  # not all in one by accident
    conflicts = [warning for warning in scan.warnings if "identical images" in warning]
    assert len(conflicts) == 40
    assert "(circle, square)" in conflicts[0] and "copy of 0.jpg" in conflicts[0]


def test_scan_names_labels_as_folders_and_skips_with_reasons(tmp_path):
    data = tmp_path / "data"
    draw_photos(data / "darth_vader", "circle", 3, seed=1)
    draw_photos(data / "Elsa Queen", "square", 2, seed=2)
    (data / "Elsa Queen" / "notes.txt").write_text("hello")
    (data / "Elsa Queen" / ".DS_Store").write_bytes(b"\0\1")
    (data / "Elsa Queen" / "nested").mkdir()
    (data / "stray.jpg").write_bytes(b"")
    (data / "empty_label").mkdir()
    (data / ".git").mkdir()
    draw_photos(data / "line\nbreak", "circle", 2, seed=3)

    scan = scan_data(data)

    assert scan.labels == ["Elsa Queen", "darth_vader"]
    assert len(scan.images) == 5
    reasons = {path.name: reason for path, reason in scan.skipped}
    assert reasons["notes.txt"] == "not an image Pillow can read"
    assert reasons[".DS_Store"] == "hidden file"
    assert "sub-folder" in reasons["nested"]
    assert "label folder" in reasons["stray.jpg"]
    assert reasons[".git"] == "hidden folder"
    assert reasons["line\nbreak"] == "a label cannot hold a line break; rename the folder"
    assert any("empty_label" in warning for warning in scan.warnings)
    assert any("only 2 images" in warning for warning in scan.warnings)


def test_missing_data_folder_names_the_fix(tmp_path):
    with pytest.raises(TensorguessError, match=r"folder not found; put your photos in .*<label>"):
        scan_data(tmp_path / "data")
