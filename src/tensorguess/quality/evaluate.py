"""Evaluation of an exported model on labelled photos: accuracy, per-label scores, confusions.

The photos are scored by `classify.loading.load_classifier`, the same code `guess` runs, so the
figures describe the model files a user has, not the training process's view of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tensorguess.errors import TensorguessError
from tensorguess.files import printable

if TYPE_CHECKING:
    from tensorguess.classify.classifier import Classifier


@dataclass(frozen=True)
class LabelScores:
    """Precision, recall and F1 of one label, and how many photos truly have it.

    For a label no photo has (`support` 0), recall and F1 mean nothing: None (a dash).
    """

    label: str
    precision: float | None
    recall: float | None
    f1: float | None
    support: int


@dataclass(frozen=True)
class Mistake:
    """A misclassified photo: its true label, the model's guess and both scores."""

    path: str
    truth: str
    guess: str
    guess_score: float
    truth_score: float


@dataclass
class Evaluation:
    """What `evaluate_images` measured; `confusion[i][j]` counts label i guessed as j."""

    labels: list[str]
    count: int
    accuracy: float | None
    per_label: list[LabelScores]
    confusion: list[list[int]]
    mistakes: list[Mistake]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unknown_labels: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """The evaluation as `evaluate --json` prints it."""
        return asdict(self)


def score_table(
    labels: Sequence[str], truths: np.ndarray, guesses: np.ndarray
) -> tuple[list[list[int]], list[LabelScores], float | None]:
    """Confusion matrix, per-label scores and accuracy from integer truths and guesses.

    A label of some photos but never guessed has precision 0 (scikit-learn's
    `zero_division=0`): a number a reader can sort by. A label of no photo has no recall and
    no F1 (None), and no precision either unless it was guessed.
    """
    count = len(labels)
    confusion = np.zeros((count, count), np.int64)
    np.add.at(confusion, (truths, guesses), 1)
    per_label = []
    for index, label in enumerate(labels):
        hits = confusion[index, index]
        guessed, present = confusion[:, index].sum(), confusion[index].sum()
        if not present:
            precision = float(hits / guessed) if guessed else None
            per_label.append(LabelScores(label, precision, None, None, 0))
            continue
        precision = float(hits / guessed) if guessed else 0.0
        recall = float(hits / present)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label.append(LabelScores(label, precision, recall, float(f1), int(present)))
    accuracy = float(np.trace(confusion) / len(truths)) if len(truths) else None
    return confusion.tolist(), per_label, accuracy


def evaluate_scores(
    labels: Sequence[str], images: Sequence[tuple[Path, str]], scores: np.ndarray | None
) -> Evaluation:
    """The evaluation of photos (path, true label) given their softmax `scores` [N, labels]."""
    labels = list(labels)
    index = {label: position for position, label in enumerate(labels)}
    scores = np.zeros((0, len(labels))) if scores is None else np.asarray(scores)
    truths = np.array([index[label] for _, label in images], np.int64)
    guesses = scores.argmax(axis=1) if len(scores) else np.zeros(0, np.int64)
    mistakes = [
        Mistake(
            str(path),
            truth,
            labels[guess],
            float(row[guess]),
            float(row[index[truth]]),
        )
        for (path, truth), row, guess in zip(images, scores, guesses, strict=True)
        if labels[guess] != truth
    ]
    # The most confident mistakes first: those are the ones worth a look.
    mistakes.sort(key=lambda mistake: -mistake.guess_score)
    confusion, per_label, accuracy = score_table(labels, truths, guesses)
    return Evaluation(labels, len(truths), accuracy, per_label, confusion, mistakes)


def evaluate_images(
    classifier: Classifier, images: Sequence[tuple[Path, str]], batch_size: int = 64
) -> Evaluation:
    """Score (path, true label) pairs with `classifier` (a `classify.classifier.Classifier`).

    Photos whose label the model does not know are left out and named; unreadable ones are
    skipped with the reason.
    """
    known_labels = set(classifier.labels)
    unknown = sorted({label for _, label in images if label not in known_labels})
    known = [(Path(path), label) for path, label in images if label in known_labels]
    scored, rows, skipped = [], [], []
    predictions = classifier.classify([path for path, _ in known], batch_size)
    for image, prediction in zip(known, predictions, strict=True):
        if prediction.scores is None:
            skipped.append((str(image[0]), prediction.problem))
        else:
            scored.append(image)
            rows.append(prediction.scores)
    scores = np.stack(rows) if rows else None
    evaluation = evaluate_scores(classifier.labels, scored, scores)
    evaluation.skipped, evaluation.unknown_labels = skipped, unknown
    return evaluation


def labelled_images(folder: Path) -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
    """(path, label) pairs of a folder laid out like data/<label>/, and the files skipped."""
    from tensorguess.data.dataset import scan_data

    scan = scan_data(folder, 0, 0, least_labels=1)
    images = [(image.path, image.label) for image in scan.images]
    return images, [(str(path), reason) for path, reason in scan.skipped]


def evaluate_folder(classifier: Classifier, folder: Path, batch_size: int = 64) -> Evaluation:
    """Evaluate `classifier` on every photo of `folder`/<label>/."""
    images, skipped = labelled_images(folder)
    evaluation = evaluate_images(classifier, images, batch_size)
    if not evaluation.count and evaluation.unknown_labels:
        raise TensorguessError(
            f"{folder}: none of its label folders ({', '.join(evaluation.unknown_labels)}) is a "
            f"label of the model ({', '.join(evaluation.labels)}); name the folders like "
            "retrained_labels.txt"
        )
    evaluation.skipped = skipped + evaluation.skipped
    return evaluation


def score_text(value: float | None) -> str:
    """A score with three decimals, or a dash where it means nothing."""
    return "-" if value is None else f"{value:.3f}"


def summary_lines(
    evaluation: Evaluation, name: str = "Accuracy", most_mistakes: int | None = None
) -> list[str]:
    """The evaluation as text: `name` = accuracy (retrain.py's line), per label, mistakes."""
    if evaluation.accuracy is None:
        return [f"{name} = n/a (N=0: no photo to test on)"]
    lines = [f"{name} = {100 * evaluation.accuracy:.1f}% (N={evaluation.count})"]
    width = max([len("label")] + [len(row.label) for row in evaluation.per_label])
    lines.append(f"{'label':<{width}}  precision  recall     F1  photos")
    for row in evaluation.per_label:
        lines.append(
            f"{row.label:<{width}}  {score_text(row.precision):>9}  {score_text(row.recall):>6}  "
            f"{score_text(row.f1):>5}  {row.support:6d}"
        )
    for label in evaluation.unknown_labels:
        lines.append(f"Left out: label folder {label!r} is not a label of this model")
    shown = evaluation.mistakes[:most_mistakes]
    if shown:
        lines.append(f"Misclassified ({len(evaluation.mistakes)}):")
        for mistake in shown:
            lines.append(
                f"  {printable(mistake.path)}: {mistake.truth} guessed as {mistake.guess} "
                f"(score = {mistake.guess_score:.5f}; {mistake.truth} {mistake.truth_score:.5f})"
            )
        if len(shown) < len(evaluation.mistakes):
            lines.append(f"  ... and {len(evaluation.mistakes) - len(shown)} more")
    return lines
