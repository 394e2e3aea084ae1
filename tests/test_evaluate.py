"""`tensorguess evaluate`: accuracy, per-label scores, confusions and mistakes of a model."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np

from helpers import LABELS, draw_photos, in_process, one_line_error
from tensorguess.quality.evaluate import score_table


def test_score_table_matches_hand_counts():
    # Truth a,a,a,b,b,c; guesses a,a,b,b,c,c.
    truths = np.array([0, 0, 0, 1, 1, 2])
    guesses = np.array([0, 0, 1, 1, 2, 2])
    confusion, per_label, accuracy = score_table(["a", "b", "c"], truths, guesses)
    assert confusion == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert accuracy == 4 / 6
    a, b, c = per_label
    assert (a.precision, a.recall, a.support) == (1.0, 2 / 3, 3)
    assert (b.precision, b.recall) == (0.5, 0.5)
    assert (c.precision, c.recall, c.f1) == (0.5, 1.0, 2 * 0.5 / 1.5)


def test_score_table_label_never_guessed_scores_zero_not_nan():
    confusion, per_label, _ = score_table(["a", "b"], np.array([0, 1]), np.array([0, 0]))
    assert confusion == [[1, 0], [1, 0]]
    assert (per_label[1].precision, per_label[1].recall, per_label[1].f1) == (0.0, 0.0, 0.0)


def _labelled_folder(root, with_a_mislabelled_photo=True):
    for label in LABELS:
        draw_photos(root / label, label, 4, seed=40)
    if with_a_mislabelled_photo:
        draw_photos(root / "circle", "square", 1, seed=41, prefix="actually_a_square")
    return root


def test_evaluate_prints_accuracy_table_and_the_mislabelled_photo(trained, tmp_path):
    tf_files, _ = trained
    folder = _labelled_folder(tmp_path / "checked")
    result = in_process("evaluate", tf_files, folder)
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"Accuracy = [\d.]+% \(N=9\)", lines[0]), result.stdout
    assert re.match(r"label\s+precision\s+recall\s+F1\s+photos", lines[1])
    assert re.match(r"circle\s+1\.000\s+0\.800\s+0\.889\s+5$", lines[2]), result.stdout
    mistakes = [line for line in lines if "guessed as" in line]
    assert len(mistakes) == 1 and "actually_a_square" in mistakes[0]
    assert "circle guessed as square (score = 0." in mistakes[0]
    assert "Confusion matrix" in result.stdout


def test_evaluate_json_and_report(trained, tmp_path):
    tf_files, _ = trained
    folder = _labelled_folder(tmp_path / "checked")
    page = tmp_path / "out" / "checked.html"
    result = in_process("evaluate", tf_files, folder, "--json", "--report", page)
    evaluation = json.loads(result.stdout)
    assert evaluation["count"] == 9 and evaluation["labels"] == list(LABELS)
    assert evaluation["confusion"] == [[4, 1], [0, 4]]
    assert [mistake["truth"] for mistake in evaluation["mistakes"]] == ["circle"]
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 1  # the confusion matrix
    # The mislabelled photo's thumbnail, and the evidence for the guessed and the true label.
    assert text.count("data:image/jpeg;base64,") == 3
    assert text.count('<figure class="mistake explained">') == 1
    assert not (page.parent / "confusion_matrix.png").exists()


def test_evaluate_leaves_out_labels_the_model_does_not_know(trained, tmp_path):
    tf_files, _ = trained
    folder = _labelled_folder(tmp_path / "checked", with_a_mislabelled_photo=False)
    draw_photos(folder / "triangle", "triangle", 2, seed=42)
    result = in_process("evaluate", tf_files, folder)
    assert "Accuracy = 100.0% (N=8)" in result.stdout
    assert "Left out: label folder 'triangle' is not a label of this model" in result.stdout


def test_evaluate_with_no_known_label_is_one_clear_line(trained, tmp_path):
    tf_files, _ = trained
    for label in ("cats", "dogs"):
        draw_photos(tmp_path / "pets" / label, "circle", 1, seed=43)
    result = in_process("evaluate", tf_files, tmp_path / "pets", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("tensorguess: error:") and "cats, dogs" in line


def test_evaluate_an_old_tools_graph_with_label_image_flags(trained, tmp_path):
    # --graph/--labels work as for guess: the evaluation scores whatever graph it is given.
    tf_files, _ = trained
    elsewhere = tmp_path / "model"
    elsewhere.mkdir()
    for name in ("retrained_graph.pb", "retrained_labels.txt"):
        shutil.copy(tf_files / name, elsewhere / f"old_{name}")
    folder = _labelled_folder(tmp_path / "checked", with_a_mislabelled_photo=False)
    result = in_process(
        "evaluate",
        tmp_path / "nowhere",
        folder,
        "--graph",
        elsewhere / "old_retrained_graph.pb",
        "--labels",
        elsewhere / "old_retrained_labels.txt",
        "--input_layer",
        "DecodeJpeg/contents",
    )
    assert "Accuracy = 100.0% (N=8)" in result.stdout


def test_evaluate_one_label_and_a_dash_for_a_label_without_photos(trained, tmp_path):
    tf_files, _ = trained
    draw_photos(tmp_path / "checked" / "circle", "circle", 3, seed=44)
    result = in_process("evaluate", tf_files, tmp_path / "checked")
    lines = result.stdout.splitlines()
    assert lines[0] == "Accuracy = 100.0% (N=3)", result.stdout
    assert re.match(r"circle\s+1\.000\s+1\.000\s+1\.000\s+3$", lines[2])
    assert re.match(r"square\s+-\s+-\s+-\s+0$", lines[3]), result.stdout


def test_evaluate_on_photos_without_label_folders_says_what_to_do(trained, tmp_path):
    draw_photos(tmp_path / "flat", "circle", 2, seed=45)
    result = in_process("evaluate", trained[0], tmp_path / "flat", check=False)
    one_line_error(result, "2 images directly in the folder but no label folders", "flat/<label>/")
