"""Sorting's file names: safe, never overwriting."""

from __future__ import annotations

from tensorguess.sort import copy_without_overwriting, safe_name_part, sorted_name


def test_sorted_name_keeps_the_original_format():
    assert sorted_name("elsa", 0.996361, ".JPG") == "elsa-0.99636.jpg"
    assert sorted_name("darth_vader", 1.0, ".png") == "darth_vader-1.00000.png"


def test_labels_cannot_escape_the_destination():
    for label in ("../../etc", "a/b", "a\\b", "..", "tab\there", "line\nbreak", ""):
        part = safe_name_part(label)
        assert "/" not in part and "\\" not in part and part not in ("", ".", "..")
        assert not any(ord(character) < 32 for character in part)


def test_taken_names_get_a_number_and_nothing_is_overwritten(tmp_path):
    source = tmp_path / "photo.jpg"
    source.write_bytes(b"first")
    destination = tmp_path / "out"
    destination.mkdir()
    (destination / "elsa-0.99000.jpg").write_bytes(b"already here")
    made = [copy_without_overwriting(source, destination, "elsa-0.99000.jpg") for _ in range(2)]
    assert [path.name for path in made] == ["elsa-0.99000-1.jpg", "elsa-0.99000-2.jpg"]
    assert (destination / "elsa-0.99000.jpg").read_bytes() == b"already here"
    assert sorted(p.name for p in destination.iterdir()) == [
        "elsa-0.99000-1.jpg",
        "elsa-0.99000-2.jpg",
        "elsa-0.99000.jpg",
    ]
