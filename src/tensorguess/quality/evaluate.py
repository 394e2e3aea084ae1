"""Evaluation of an exported model on labelled photos: accuracy, per-label scores, confusions.

The photos are scored by `classify.loading.load_classifier`, the same code `guess` runs, so the
figures describe the model files a user has, not the training process's view of them.

A multi-label model (classify/task.py) is measured as multi-label users read it: the share
of photos with every label right (exact match), F1 over every (photo, label) pair at once
(micro) and the mean of the labels' F1 (macro), each label's precision, recall, F1 and
average precision (the area under its precision-recall curve, as scikit-learn's
`average_precision_score` computes it), their mean (mAP), and the photos it got most wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tensorguess.classify.task import MULTI_LABEL, SINGLE, SINGLE_LABEL, Task, micro_f1, task_of
from tensorguess.errors import TensorguessError
from tensorguess.files import printable

if TYPE_CHECKING:
    from tensorguess.classify.classifier import Classifier

# A photo's true labels: one label (single-label), or any number of them (multi-label).
Truth = str | tuple[str, ...]


@dataclass(frozen=True)
class LabelScores:
    """Precision, recall and F1 of one label, and how many photos truly have it.

    For a label no photo has (`support` 0), recall and F1 mean nothing: None (a dash).
    Multi-label also has the label's `average_precision` (None when no photo has it) and
    `threshold`.
    """

    label: str
    precision: float | None
    recall: float | None
    f1: float | None
    support: int
    average_precision: float | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class Mistake:
    """A misclassified photo: its true label, the model's guess and both scores."""

    path: str
    truth: str
    guess: str
    guess_score: float
    truth_score: float


@dataclass(frozen=True)
class Miss:
    """A photo a multi-label model got wrong: the labels it has, those it was given, and its
    worst label (`label`: the one whose score is furthest on the wrong side, `score`), which
    the photo has (`missed`) or has not."""

    path: str
    truth: list[str]
    given: list[str]
    label: str
    score: float
    missed: bool

    @property
    def error(self) -> float:
        """How far the worst label's score is from right (1: as wrong as can be)."""
        return 1 - self.score if self.missed else self.score

    def describe(self) -> str:
        """`has shirt striped, given shirt dress (striped missed: 0.12000)`."""
        how = "missed" if self.missed else "given wrongly"
        return (
            f"has {' '.join(self.truth) or 'no label'}, given {' '.join(self.given) or 'none'} "
            f"({self.label} {how}: {self.score:.5f})"
        )


@dataclass
class Evaluation:
    """What `evaluate_images` measured; `confusion[i][j]` counts label i guessed as j.

    Multi-label: `accuracy` is the exact-match ratio, `confusion` and `mistakes` are empty,
    and `misses` lists the photos with a label wrong, the worst first; `truth` and `scores`
    keep what the figures were computed from (for the report's curves, not the JSON).
    """

    labels: list[str]
    count: int
    accuracy: float | None
    per_label: list[LabelScores]
    confusion: list[list[int]]
    mistakes: list[Mistake]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unknown_labels: list[str] = field(default_factory=list)
    task: str = SINGLE_LABEL
    micro_f1: float | None = None
    macro_f1: float | None = None
    mean_average_precision: float | None = None
    misses: list[Miss] = field(default_factory=list)
    truth: np.ndarray | None = field(default=None, repr=False)
    scores: np.ndarray | None = field(default=None, repr=False)

    @property
    def headline(self) -> tuple[str, float | None]:
        """The figure a model is judged by: accuracy, or micro-F1 (multi-label)."""
        if self.task == MULTI_LABEL:
            return "micro-F1", self.micro_f1
        return "accuracy", self.accuracy

    def to_json(self) -> dict:
        """The evaluation as `evaluate --json` prints it (a single-label one as it always was)."""
        evaluation = asdict(self)
        del evaluation["truth"], evaluation["scores"]
        if self.task == MULTI_LABEL:
            del evaluation["confusion"], evaluation["mistakes"]
            return evaluation
        for name in ("task", "micro_f1", "macro_f1", "mean_average_precision", "misses"):
            del evaluation[name]
        for row in evaluation["per_label"]:
            del row["average_precision"], row["threshold"]
        return evaluation

    def recorded(self) -> dict:
        """What tensorguess.json keeps of a training run's test figures."""
        figures = {"test_accuracy": self.accuracy, "test_count": self.count}
        if self.task == MULTI_LABEL:
            figures.update(
                test_micro_f1=self.micro_f1,
                test_macro_f1=self.macro_f1,
                test_mean_average_precision=self.mean_average_precision,
            )
        return figures


def score_table(
    labels: Sequence[str], truths: np.ndarray, guesses: np.ndarray
) -> tuple[list[list[int]], list[LabelScores], float | None]:
    """Confusion matrix, per-label scores and accuracy from integer truths and guesses."""
    count = len(labels)
    confusion = np.zeros((count, count), np.int64)
    np.add.at(confusion, (truths, guesses), 1)
    has = SINGLE.indicators(truths, count)
    per_label = label_scores(labels, has, SINGLE.indicators(guesses, count))
    accuracy = float(np.trace(confusion) / len(truths)) if len(truths) else None
    return confusion.tolist(), per_label, accuracy


def label_scores(labels: Sequence[str], has: np.ndarray, given: np.ndarray) -> list[LabelScores]:
    """Each label's precision, recall and F1 from which photos have it and which were given
    it (booleans [photos, labels]).

    A label of some photos but never given has precision 0 (scikit-learn's
    `zero_division=0`): a number a reader can sort by. A label of no photo has no recall and
    no F1 (None), and no precision either unless it was given.
    """
    per_label = []
    for index, label in enumerate(labels):
        hits = int((has[:, index] & given[:, index]).sum())
        guessed, present = int(given[:, index].sum()), int(has[:, index].sum())
        if not present:
            precision = float(hits / guessed) if guessed else None
            per_label.append(LabelScores(label, precision, None, None, 0))
            continue
        precision = float(hits / guessed) if guessed else 0.0
        recall = float(hits / present)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label.append(LabelScores(label, precision, recall, float(f1), present))
    return per_label


def precision_recall_curve(scores: np.ndarray, has: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall) of one label at each distinct score taken as the threshold, from
    the highest down (scikit-learn's points, in the other order)."""
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], np.cumsum(has[order])
    last = np.append(ranked[1:] != ranked[:-1], True)  # each threshold's last photo
    accepted = np.arange(1, len(scores) + 1)[last]
    hits = hits[last]
    return hits / accepted, hits / max(int(has.sum()), 1)


def average_precision(scores: np.ndarray, has: np.ndarray) -> float | None:
    """The area under one label's precision-recall curve (steps, as scikit-learn's
    `average_precision_score`); None when no photo has the label."""
    if not has.any():
        return None
    precision, recall = precision_recall_curve(scores, has)
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def evaluate_scores(
    labels: Sequence[str],
    images: Sequence[tuple[Path, Truth]],
    scores: np.ndarray | None,
    task: Task = SINGLE,
) -> Evaluation:
    """The evaluation of photos (path, true label or labels) given their `scores`
    [N, labels] from a model of `task`."""
    labels = list(labels)
    scores = np.zeros((0, len(labels))) if scores is None else np.asarray(scores)
    if task.multi_label:
        return _multi_label_evaluation(labels, images, scores, task)
    index = {label: position for position, label in enumerate(labels)}
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


def _multi_label_evaluation(
    labels: list[str], images: Sequence[tuple[Path, Truth]], scores: np.ndarray, task: Task
) -> Evaluation:
    truth = task.truth([given for _, given in images], labels)
    has = task.indicators(truth, len(labels))
    given = task.given(scores) if len(scores) else np.zeros_like(has)
    thresholds = task.threshold_array(len(labels))
    assert thresholds is not None
    per_label = [
        replace(
            row,
            average_precision=average_precision(scores[:, i], has[:, i]),
            threshold=float(thresholds[i]),
        )
        for i, row in enumerate(label_scores(labels, has, given))
    ]
    measured = [row.average_precision for row in per_label if row.average_precision is not None]
    f1s = [row.f1 for row in per_label if row.f1 is not None]
    misses = []
    for (path, _), row_has, row_given, row in zip(images, has, given, scores, strict=True):
        wrong = np.flatnonzero(row_has != row_given)
        if not len(wrong):
            continue
        errors = np.where(row_has[wrong], 1 - row[wrong], row[wrong])
        worst = int(wrong[np.argmax(errors)])
        misses.append(
            Miss(
                str(path),
                [label for label, yes in zip(labels, row_has, strict=True) if yes],
                [label for label, yes in zip(labels, row_given, strict=True) if yes],
                labels[worst],
                float(row[worst]),
                bool(row_has[worst]),
            )
        )
    misses.sort(key=lambda miss: -miss.error)
    count = len(images)
    return Evaluation(
        labels,
        count,
        float((has == given).all(axis=1).mean()) if count else None,
        per_label,
        [],
        [],
        task=MULTI_LABEL,
        micro_f1=micro_f1(has, given) if count else None,
        macro_f1=float(np.mean(f1s)) if f1s else None,
        mean_average_precision=float(np.mean(measured)) if measured else None,
        misses=misses,
        truth=has,
        scores=scores,
    )


def evaluate_images(
    classifier: Classifier,
    images: Sequence[tuple[Path, Truth]],
    batch_size: int = 64,
    task: Task | None = None,
) -> Evaluation:
    """Score (path, true label or labels) pairs with `classifier` (a
    `classify.classifier.Classifier`), as a model of `task` (default: the classifier's).

    Labels the model does not know are named: a photo of one is left out (a multi-label photo
    keeps its other labels); unreadable photos are skipped with the reason.
    """
    known_labels = set(classifier.labels)
    unknown = sorted({label for _, truth in images for label in _label_set(truth)} - known_labels)
    known = [
        (Path(path), truth if isinstance(truth, str) else tuple(set(truth) & known_labels))
        for path, truth in images
        if not isinstance(truth, str) or truth in known_labels
    ]
    scored, rows, skipped = [], [], []
    predictions = classifier.classify([path for path, _ in known], batch_size)
    for image, prediction in zip(known, predictions, strict=True):
        if prediction.scores is None:
            skipped.append((str(image[0]), prediction.problem))
        else:
            scored.append(image)
            rows.append(prediction.scores)
    scores = np.stack(rows) if rows else None
    evaluation = evaluate_scores(classifier.labels, scored, scores, task or task_of(classifier))
    evaluation.skipped, evaluation.unknown_labels = skipped, unknown
    return evaluation


def _label_set(truth: Truth) -> tuple[str, ...]:
    return (truth,) if isinstance(truth, str) else tuple(truth)


def labelled_images(
    folder: Path, multi_label: bool = False
) -> tuple[list[tuple[Path, Truth]], list[tuple[str, str]]]:
    """(path, label) pairs of a folder laid out like data/<label>/ (with `multi_label`,
    (path, labels): from folder/labels.csv, or the label folders each photo is in), and the
    files skipped."""
    from tensorguess.data.dataset import LABELS_CSV, scan_data

    folder = Path(folder)
    scan = scan_data(
        folder, 0, 0, least_labels=1, multi_label=multi_label, labels_csv=folder / LABELS_CSV
    )
    images: list[tuple[Path, Truth]] = [
        (image.path, image.labels if multi_label else image.label) for image in scan.images
    ]
    return images, [(str(path), reason) for path, reason in scan.skipped]


def evaluate_folder(classifier: Classifier, folder: Path, batch_size: int = 64) -> Evaluation:
    """Evaluate `classifier` on every photo of `folder`/<label>/ (or of folder/labels.csv,
    for a multi-label model)."""
    images, skipped = labelled_images(folder, task_of(classifier).multi_label)
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
    evaluation: Evaluation, title: str = "", most_mistakes: int | None = None
) -> list[str]:
    """The evaluation as text: "`title` accuracy = ..." (retrain.py's line; "Accuracy"
    without a title), per label, mistakes; multi-label: micro-F1 and mAP first."""
    name, value = evaluation.headline
    name = f"{title} {name}" if title else name[0].upper() + name[1:]
    if value is None:
        return [f"{name} = n/a (N=0: no photo to test on)"]
    if evaluation.task == MULTI_LABEL:
        return _multi_label_lines(evaluation, name, most_mistakes)
    lines = [f"{name} = {100 * value:.1f}% (N={evaluation.count})"]
    lines += _per_label_lines(evaluation) + _left_out(evaluation)
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


def _per_label_lines(evaluation: Evaluation) -> list[str]:
    """The per-label table (multi-label: with average precision and threshold)."""
    multi_label = evaluation.task == MULTI_LABEL
    width = max([len("label")] + [len(row.label) for row in evaluation.per_label])
    extra = "     AP  threshold" if multi_label else ""
    lines = [f"{'label':<{width}}  precision  recall     F1{extra}  photos"]
    for row in evaluation.per_label:
        figures = ""
        if multi_label:
            figures = f"  {score_text(row.average_precision):>5}  {score_text(row.threshold):>9}"
        lines.append(
            f"{row.label:<{width}}  {score_text(row.precision):>9}  {score_text(row.recall):>6}  "
            f"{score_text(row.f1):>5}{figures}  {row.support:6d}"
        )
    return lines


def _left_out(evaluation: Evaluation) -> list[str]:
    return [
        f"Left out: label folder {label!r} is not a label of this model"
        for label in evaluation.unknown_labels
    ]


def _multi_label_lines(evaluation: Evaluation, name: str, most: int | None) -> list[str]:
    """A multi-label evaluation as text: the figures, the per-label table, the worst misses."""
    lines = [
        f"{name} = {score_text(evaluation.micro_f1)}, mAP = "
        f"{score_text(evaluation.mean_average_precision)} (N={evaluation.count})",
        f"Exact match (every label right) = {100 * (evaluation.accuracy or 0):.1f}%, "
        f"macro-F1 = {score_text(evaluation.macro_f1)}",
    ]
    lines += _per_label_lines(evaluation) + _left_out(evaluation)
    shown = evaluation.misses[:most]
    if shown:
        count = len(evaluation.misses)
        lines.append(f"Worst misses ({count} photo{'s' * (count != 1)} with a label wrong):")
        lines += [f"  {printable(miss.path)}: {miss.describe()}" for miss in shown]
        if len(shown) < len(evaluation.misses):
            lines.append(f"  ... and {len(evaluation.misses) - len(shown)} more")
    return lines
