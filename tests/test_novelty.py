"""None of the above: the novelty score travels with the model, and guess and guessDir use it.

The session's model knows drawn circles and squares; the repository's own sample photos
(hands showing digits, test_data/) are unlike every one of them.
"""

from __future__ import annotations

import json

import numpy as np

from helpers import ROOT, draw_photos, in_process, one_line_error, tensorguess, wrapper
from tensorguess.features.novelty import EXCEEDING, fit_novelty

HANDS = sorted((ROOT / "test_data").glob("*.JPG"))
UNKNOWN_LINE = "(unlike every training photo)"


def test_the_threshold_is_exceeded_by_about_two_percent_of_photos_like_the_training_ones():
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(8, 64))

    def photos(count, spread=0.1):  # features near an 8-dimensional subspace
        return np.abs(
            rng.normal(size=(count, 8)) @ directions + spread * rng.normal(size=(count, 64))
        )

    novelty = fit_novelty(photos(400), photos(200))
    assert novelty.calibrated_on == 200
    like = novelty.scores(photos(5000)) > novelty.threshold
    unlike = novelty.scores(np.abs(rng.normal(size=(200, 64)))) > novelty.threshold
    assert 0.5 * EXCEEDING <= like.mean() <= 2 * EXCEEDING
    assert unlike.all()
    # Too few validation photos: out-of-fold training photos calibrate it instead.
    assert "out-of-fold" in fit_novelty(photos(100), photos(3)).calibration


def test_guess_says_when_a_photo_is_unlike_every_training_photo(trained, tmp_path):
    tf_files, _ = trained
    circle = draw_photos(tmp_path, "circle", 1, seed=77)[0]
    hand = HANDS[0]
    lines = wrapper("guess.sh", tf_files, circle, hand).stdout.splitlines()
    at = lines.index(f"{hand}:")
    assert UNKNOWN_LINE not in lines[:at]
    assert lines[at + 2] == UNKNOWN_LINE and "(score = " in lines[at + 1]
    assert len(lines) == 2 * 3 + 1  # 2 names, 2 labels each, one novelty line
    threshold = json.loads((tf_files / "tensorguess.json").read_text())["novelty"]["threshold"]
    answers = {}
    for engine in ("auto", "tensorflow"):
        result = in_process("guess", tf_files, circle, hand, "--json", "--engine", engine)
        answers[engine] = [(row["novelty"], row["unknown"]) for row in json.loads(result.stdout)]
    assert [unknown for _, unknown in answers["auto"]] == [False, True]
    assert answers["auto"][0][0] < threshold < answers["auto"][1][0]
    # OpenVINO (bfloat16 on a CPU with AMX) and TensorFlow (float32) agree on the score.
    for (ours, _), (reference, _) in zip(answers["auto"], answers["tensorflow"], strict=True):
        assert abs(ours - reference) < 0.03


def test_guess_dir_unknown_names_photos_unlike_every_training_photo(trained, tmp_path):
    tf_files, _ = trained
    source, destination = tmp_path / "unsorted", tmp_path / "sorted"
    shapes = draw_photos(source, "circle", 3, seed=78) + draw_photos(source, "square", 3, seed=78)
    for hand in HANDS:
        (source / hand.name).symlink_to(hand)
    result = wrapper("guessDir.sh", tf_files, source, destination, "--unknown")
    assert f"Unlike every training photo: {len(HANDS)}, named unknown-*" in result.stdout
    names = sorted(path.name for path in destination.iterdir() if path.suffix != ".csv")
    unknown = [name for name in names if name.startswith("unknown-")]
    assert len(unknown) == len(HANDS) and len(names) == len(HANDS) + len(shapes)
    # A rerun adopts every copy, unknown-* ones included: nothing is sorted twice.
    again = wrapper("guessDir.sh", tf_files, source, destination, "--unknown").stdout
    assert "Sorted 0 images" in again and f"Already sorted by an earlier run: {len(names)}" in again
    # Without --unknown the names are as before.
    plain = tmp_path / "plain"
    wrapper("guessDir.sh", tf_files, source, plain)
    assert not list(plain.glob("unknown-*"))


def test_unknown_needs_a_model_with_a_novelty_threshold(trained_copy, tmp_path):
    (trained_copy / "tensorguess.json").unlink()  # a graph copied without its metadata
    source = tmp_path / "unsorted"
    draw_photos(source, "circle", 1, seed=79)
    result = tensorguess(
        "sort", trained_copy, source, tmp_path / "sorted", "--unknown", check=False
    )
    one_line_error(result, "retrained_graph.pb", "no novelty score", "train it again")
    assert not (tmp_path / "sorted").exists()
    # guess still labels with such a model; it just cannot say unknown.
    answer = json.loads(tensorguess("guess", trained_copy, HANDS[0], "--json").stdout)[0]
    assert "novelty" not in answer and answer["predictions"]
