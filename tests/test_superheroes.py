"""The original project's own data (../shared/datasets/superheroes), when it is present."""

from __future__ import annotations

import csv
import re

import pytest

from helpers import SUPERHEROES, wrapper

pytestmark = pytest.mark.skipif(
    not SUPERHEROES.is_dir(), reason="../shared/datasets/superheroes is not present"
)


def test_superheroes_test_accuracy(superheroes_model):
    _, result = superheroes_model
    match = re.search(r"^Final test accuracy = ([\d.]+)% \(N=(\d+)\)$", result.stdout, re.M)
    assert match and float(match.group(1)) >= 95 and int(match.group(2)) >= 40, result.stdout


def test_guess_elsa(superheroes_model):
    tf_files, _ = superheroes_model
    result = wrapper("guess.sh", tf_files, SUPERHEROES / "test_data" / "images00.jpg")
    assert result.stdout.splitlines()[0].startswith("elsa (score = ")


def test_guess_dir_sorts_the_test_folder(superheroes_model, tmp_path):
    tf_files, _ = superheroes_model
    wrapper("guessDir.sh", tf_files, SUPERHEROES / "test_data", tmp_path / "sorted")
    with open(SUPERHEROES / "test_labels.csv", newline="") as stream:
        truth = {row["file"]: row["label"] for row in csv.DictReader(stream)}
    with open(tmp_path / "sorted" / "manifest.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 25 == len(list((tmp_path / "sorted").glob("*.jpg")))
    correct = sum(truth[row["source"].rsplit("/", 1)[1]] == row["label"] for row in rows)
    assert correct >= 22


SIGN_DIGITS = SUPERHEROES.parent / "sign-digits" / "images"


@pytest.mark.skipif(not SIGN_DIGITS.is_dir(), reason="../shared/datasets/sign-digits is absent")
def test_guess_dir_unknown_names_the_hands_among_the_superheroes(superheroes_model, tmp_path):
    """Hands showing digits are unlike every superhero photo. Four of test_data's 25 heroes
    are odd ones out too (a mug, crochet dolls, a costume drawing twice), and are named
    unknown- with the balanced preset; docs/accuracy.md has the figures on every hand."""
    tf_files, _ = superheroes_model
    source = tmp_path / "mixed"
    source.mkdir()
    heroes = sorted((SUPERHEROES / "test_data").iterdir())
    hands = sorted(SIGN_DIGITS.rglob("*.JPG"))[::50]
    for path in heroes:
        (source / f"hero-{path.name}").symlink_to(path)
    for path in hands:
        (source / f"hand-{path.parent.name}-{path.name}").symlink_to(path)
    wrapper("guessDir.sh", tf_files, source, tmp_path / "sorted", "--unknown", "--json")
    with open(tmp_path / "sorted" / "manifest.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))  # sources as real paths: the links resolved
    unknown = {
        row["source"] for row in rows if row["destination"].rsplit("/", 1)[1].startswith("unknown-")
    }
    assert len(rows) == len(heroes) + len(hands)
    # 41 of 42 where OpenVINO computes in float32, 37 where it computes in bfloat16 (AMX):
    # the models differ by machine; a margin below both.
    assert len(unknown & {str(path.resolve()) for path in hands}) >= 0.8 * len(hands)
    assert len(unknown & {str(path.resolve()) for path in heroes}) <= 5
