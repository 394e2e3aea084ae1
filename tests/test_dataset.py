"""Scanning data/: labels, the stable split, and what is skipped with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import draw_photos
from tensorguess.dataset import TEST, TRAIN, VALIDATION, scan_data, split_for
from tensorguess.errors import TensorguessError


def test_split_is_stable_and_follows_the_percentages():
    names = [Path(f"photo_{number}.jpg") for number in range(4000)]
    splits = [split_for(name, 10, 10) for name in names]
    assert splits == [split_for(name, 10, 10) for name in names]
    for split, share in ((TRAIN, 0.8), (VALIDATION, 0.1), (TEST, 0.1)):
        assert abs(splits.count(split) / len(names) - share) < 0.03
    # retrain.py's rule: "_nohash_" suffixes split with their base name.
    assert split_for(Path("dog_nohash_1.jpg"), 10, 10) == split_for(
        Path("dog_nohash_7.jpg"), 10, 10
    )
    # The split of a file depends on its name only, not on its folder or the other files.
    assert split_for(Path("a/x.jpg"), 10, 10) == split_for(Path("b/x.jpg"), 10, 10)


def test_scan_names_labels_as_folders_and_skips_with_reasons(tmp_path):
    data = tmp_path / "data"
    draw_photos(data / "darth_vader", "circle", 3, seed=1)
    draw_photos(data / "Elsa Queen", "square", 2, seed=2)
    (data / "Elsa Queen" / "notes.txt").write_text("hello")
    (data / "Elsa Queen" / ".DS_Store").write_bytes(b"\0\1")
    (data / "Elsa Queen" / "nested").mkdir()
    (data / "stray.jpg").write_bytes(b"")
    (data / "empty_label").mkdir()

    scan = scan_data(data)

    assert scan.labels == ["Elsa Queen", "darth_vader"]
    assert len(scan.images) == 5
    reasons = {path.name: reason for path, reason in scan.skipped}
    assert reasons["notes.txt"] == "not an image Pillow can read"
    assert reasons[".DS_Store"] == "hidden file"
    assert "sub-folder" in reasons["nested"]
    assert "label folder" in reasons["stray.jpg"]
    assert any("empty_label" in warning for warning in scan.warnings)
    assert any("only 2 images" in warning for warning in scan.warnings)


@pytest.mark.parametrize(("validation", "test"), [(-1, 10), (50, 50), (10, 100)])
def test_impossible_percentages_are_refused(tmp_path, validation, test):
    with pytest.raises(TensorguessError, match="percentage"):
        scan_data(tmp_path, validation, test)


def test_missing_data_folder_names_the_fix(tmp_path):
    with pytest.raises(TensorguessError, match=r"folder not found; put your photos in .*<label>"):
        scan_data(tmp_path / "data")
