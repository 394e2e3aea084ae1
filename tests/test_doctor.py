"""Know your data: doctor lists likely mislabelled photos, near-duplicates and outliers, and
changes nothing. Sign-digits (when ../shared is present) with labels flipped on purpose."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest
from PIL import Image

from helpers import SHARED, colour_photos, draw_photos, one_line_error, tensorguess
from tensorguess.data.dataset import TEST, TRAIN, split_for
from tensorguess.quality.doctor import find_label_issues

SIGN_DIGITS = SHARED / "datasets" / "sign-digits" / "images"
PER_LABEL = 60  # 600 photos: the cache is cold in every session
FLIPPED = 0.05


def _listing(folder) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _copy_in_another_split(original, target_folder):
    """A copy of `original` at twice its size (so a near-duplicate, not an identical file)
    whose content puts it in the test split when the original is in train, or vice versa."""
    image = Image.open(original).convert("RGB")
    image = image.resize((image.width * 2, image.height * 2), Image.Resampling.BICUBIC)
    for quality in range(99, 60, -1):
        target = target_folder / f"bigger_{original.name}"
        image.save(target, quality=quality)
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        theirs = split_for(original, hashlib.sha256(original.read_bytes()).hexdigest(), 10, 10)
        if {split_for(target, digest, 10, 10), theirs} == {TRAIN, TEST}:
            return target
    pytest.fail("no quality put the copy in the other split")


@pytest.mark.skipif(not SIGN_DIGITS.is_dir(), reason="../shared/datasets/sign-digits is absent")
def test_doctor_finds_flipped_labels_near_duplicates_and_outliers(tmp_path):
    rng = random.Random(14)
    tf_files = tmp_path / "tf_files"
    labels = sorted(folder.name for folder in SIGN_DIGITS.iterdir() if folder.is_dir())
    photos = [
        (path, label)
        for label in labels
        for path in rng.sample(sorted((SIGN_DIGITS / label).iterdir()), PER_LABEL)
    ]
    flipped = set(rng.sample(range(len(photos)), round(FLIPPED * len(photos))))
    wrong = set()
    for index, (path, label) in enumerate(photos):
        given = (
            rng.choice([other for other in labels if other != label]) if index in flipped else label
        )
        (tf_files / "data" / given).mkdir(parents=True, exist_ok=True)
        (tf_files / "data" / given / path.name).symlink_to(path)
        if index in flipped:
            wrong.add(str(tf_files / "data" / given / path.name))
    kept = next(
        path for index, (path, label) in enumerate(photos) if label == "3" and index not in flipped
    )
    original = tf_files / "data" / "3" / kept.name
    twin = _copy_in_another_split(original.resolve(), tf_files / "data" / "3")
    # Photos of nothing like a hand, each unlike the others too.
    strangers = draw_photos(tf_files / "data" / "7", "circle", 1, seed=14)
    strangers += draw_photos(tf_files / "data" / "2", "square", 1, seed=14)
    colour_photos(tf_files / "data" / "5", (200, 40, 160), 1, seed=14)
    strangers += list((tf_files / "data" / "5").glob("*.png"))
    before = _listing(tf_files / "data")

    page = tmp_path / "checkup.html"
    result = tensorguess("doctor", tf_files, "--json", "--report", page)
    found = json.loads(result.stdout)

    listed = {issue["path"]: issue for issue in found["label_issues"]}
    assert set(next(iter(listed.values()))) >= {"path", "label", "suggested", "confidence"}
    caught = wrong & set(listed)
    # 600 photos make a weaker out-of-fold classifier than all 2,062 (docs/accuracy.md:
    # 79-85% of the flipped ones found, 80-82% of those listed flipped); here 67-73% and
    # about 50% were measured. Listing at random would find 5%.
    assert len(caught) >= 0.6 * len(wrong), (len(caught), len(wrong), len(listed))
    assert len(caught) >= 0.4 * len(listed), (len(caught), len(wrong), len(listed))
    for path in caught:  # the likely label is the true one, mostly
        assert listed[path]["suggested"] != listed[path]["label"]
    truth = {
        str(tf_files / "data" / given / path.name): label
        for path, label in photos
        for given in labels
    }
    right = sum(listed[path]["suggested"] == truth[path] for path in caught)
    assert right >= 0.8 * len(caught)

    pairs = {tuple(sorted(pair["paths"])): pair for pair in found["near_duplicates"]}
    pair = pairs[tuple(sorted([str(original), str(twin)]))]
    assert pair["straddles_train_and_test"] and not pair["identical"]
    assert {str(path) for path in strangers} <= {outlier["path"] for outlier in found["outliers"]}
    assert found["label_counts"]["7"] >= PER_LABEL
    assert "Near-duplicates: " in result.stderr and "Likely mislabelled: " in result.stderr

    html = page.read_text()
    for section in ("Likely mislabelled", "Near-duplicates", "Outliers"):
        assert f"<h2>{section}" in html
    assert html.count("data:image/jpeg") >= len(listed) + 2 + len(strangers)
    assert _listing(tf_files / "data") == before  # nothing moved, renamed or rewritten


def test_train_ends_with_a_data_check_and_the_report_shows_it(trained):
    tf_files, result = trained
    assert "Data check (tensorguess doctor TF_FILES lists everything):" in result.stdout
    assert "  Photos per label: circle 24, square 24" in result.stdout
    assert "Novelty threshold = " in result.stdout
    assert "<h2>Data check</h2>" in (tf_files / "report.html").read_text()


def test_doctor_without_photos_is_one_line(tmp_path):
    result = tensorguess("doctor", tmp_path, check=False)
    one_line_error(result, str(tmp_path / "data"), "folder not found")


def test_confident_learning_lists_what_cleanlab_lists():
    from cleanlab.filter import find_label_issues as cleanlabs

    rng = np.random.default_rng(0)
    for trial in range(60):
        count, photos = int(rng.integers(2, 12)), int(rng.integers(20, 400))
        logits = rng.normal(size=(photos, count)) * rng.uniform(0.5, 6)
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        labels = rng.integers(0, count, photos)
        if trial % 2:  # mostly the likely label, as with a real classifier
            labels = np.where(rng.random(photos) < 0.8, probabilities.argmax(axis=1), labels)
        labels[:count] = np.arange(count)
        expected = cleanlabs(labels, probabilities, n_jobs=1)
        assert (find_label_issues(labels, probabilities) == expected).all(), trial
