"""The task: what kind of answer a model gives, and everything that follows from it.

A single-label model gives each photo one label (a softmax over the labels: the scores add up
to 1, the best one is the answer); a multi-label model gives it any number, none included
(an independent sigmoid per label: each score is that label's own probability, and the
labels over their thresholds are the answer). One object says, for either, what training,
evaluation, guessing, sorting and export need and would otherwise each decide on their own:
the output activation, the loss and the figure an epoch is judged by, how the truth becomes
targets and how label balance weighs them, how scores become labels, where a sorted photo
goes, and what tensorguess.json and the graph record.

Multi-label, in numbers:

- Loss: binary cross entropy of each label, averaged over the labels. Label smoothing moves
  each target toward 0.5 by its share (0.1: 0.95 and 0.05), as Keras' BinaryCrossentropy
  does. `--class_weights balanced` weighs each label's two cases apart, as scikit-learn's
  "balanced" does for one binary problem: a photo that has the label counts
  N / (2 * photos with it), one that has not N / (2 * photos without it), so the rare case of
  every label weighs as much in total as the common one.
- Thresholds: each label's, chosen on the validation photos for the best F1 (the midpoint
  between the lowest score it accepts and the highest it refuses); `DEFAULT_THRESHOLD` for a
  label no validation photo has, or when there are no validation photos.
- During training each epoch is judged by its micro-averaged F1 at 0.5 (the thresholds are
  chosen after training).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from tensorguess.data.dataset import UNTAGGED

SINGLE_LABEL, MULTI_LABEL = "single-label", "multi-label"
# A constant in multi-label graphs naming their task (single-label graphs, ours from before
# and the old tools', have none).
TASK_NODE = "tensorguess_task"
DEFAULT_THRESHOLD = 0.5
# What the clipped logarithms of the loss clip at (Keras' epsilon).
EPSILON = 1e-7


@dataclass(frozen=True)
class Place:
    """Where a sorted photo goes: a `folder` of DEST ("" for DEST itself), and the `label`
    and `score` its name there tells."""

    folder: str
    label: str
    score: float


class Task(ABC):
    """What differs between single-label and multi-label models (the module says what)."""

    name: ClassVar[str]
    multi_label: ClassVar[bool]  # whether a photo may have any number of labels
    activation: ClassVar[str]  # "softmax" or "sigmoid"
    # The figure each epoch is judged by: its key in the training history, and its name.
    metric_key: ClassVar[str]
    metric_name: ClassVar[str]

    @abstractmethod
    def truth(self, label_sets: Sequence[Sequence[str]], labels: Sequence[str]) -> np.ndarray:
        """The photos' true labels as training holds them: label indices [N] (single-label)
        or 0/1 rows [N, labels] (multi-label)."""

    @abstractmethod
    def indicators(self, truth: np.ndarray, count: int) -> np.ndarray:
        """`truth` as booleans [N, count]: which labels each photo has."""

    def targets(self, truth: np.ndarray, count: int) -> np.ndarray:
        """What the network learns to output for `truth`: [N, count] float32."""
        return self.indicators(truth, count).astype(np.float32)

    @abstractmethod
    def label_balance(self, truth: np.ndarray, count: int, balance: bool) -> np.ndarray:
        """The loss weights of the training photos' labels (see `photo_weights`): all 1, or
        inversely proportional to how common each case is when `balance`."""

    @abstractmethod
    def photo_weights(self, balance: np.ndarray, truth: np.ndarray) -> np.ndarray:
        """The loss weight of each photo [N] (or of each of its labels, [N, labels])."""

    @abstractmethod
    def photo_losses(self, label_smoothing: float) -> Callable:
        """`losses(targets, scores, weights)`: each photo's weighted loss [N] (a tensor)."""

    @abstractmethod
    def loss(self, label_smoothing: float) -> Callable:
        """`loss(targets, scores, weights=None)`: the mean loss of a batch (a tensor)."""

    @abstractmethod
    def metric(self, scores: np.ndarray, truth: np.ndarray) -> float:
        """The figure an epoch is judged by, from 0 to 1."""

    @abstractmethod
    def describe_metric(self, value: float) -> str:
        """The figure in words: "accuracy = 97.5%", "micro-F1 = 0.912"."""

    @abstractmethod
    def activate(self, logits: np.ndarray) -> np.ndarray:
        """The scores [N, labels] of the head's last layer's output, in numpy."""

    @abstractmethod
    def activate_tensor(self, logits):
        """The same in TensorFlow ops, for the exported graph."""

    @abstractmethod
    def given(self, scores: np.ndarray) -> np.ndarray:
        """Which labels the model gives each photo: booleans [N, labels]."""

    @abstractmethod
    def places(self, scores: np.ndarray, labels: Sequence[str]) -> list[Place]:
        """Where guessDir.sh puts a photo with these `scores`: its first place is the copy,
        the others more names of it."""

    @abstractmethod
    def folders(self, labels: Sequence[str]) -> list[str]:
        """The folders of DEST guessDir.sh may put photos in (DEST itself aside)."""

    @abstractmethod
    def metadata(self, labels: Sequence[str]) -> dict:
        """What tensorguess.json records of the task (nothing for single-label)."""

    def answer(self, scores: np.ndarray, labels: Sequence[str]) -> tuple[str, ...] | None:
        """The labels a multi-label model gives a photo, best first; None for single-label
        (its answer is its best score)."""
        return None

    def threshold_array(self, count: int) -> np.ndarray | None:
        """Each label's threshold [count]; None for single-label (it has none)."""
        return None


@dataclass(frozen=True)
class SingleLabel(Task):
    """One label per photo: softmax, categorical cross entropy, the best score wins."""

    name = SINGLE_LABEL
    multi_label = False
    activation = "softmax"
    metric_key = "accuracy"
    metric_name = "accuracy"

    def truth(self, label_sets: Sequence[Sequence[str]], labels: Sequence[str]) -> np.ndarray:
        """Label indices [N]."""
        index = {label: position for position, label in enumerate(labels)}
        return np.array([index[given[0]] for given in label_sets], dtype=np.int64)

    def indicators(self, truth: np.ndarray, count: int) -> np.ndarray:
        """One-hot rows."""
        return np.eye(count, dtype=bool)[np.asarray(truth, np.int64)]

    def label_balance(self, truth: np.ndarray, count: int, balance: bool) -> np.ndarray:
        """A weight per label [count]: 1, or inversely proportional to its share."""
        if not balance:
            return np.ones(count, np.float32)
        counts = np.bincount(truth, minlength=count).astype(np.float32)
        # A label with no training photo gets weight 0; training refuses that case anyway.
        return np.where(counts > 0, len(truth) / (count * np.maximum(counts, 1)), 0).astype(
            np.float32
        )

    def photo_weights(self, balance: np.ndarray, truth: np.ndarray) -> np.ndarray:
        """Each photo weighs what its label does."""
        return balance[truth]

    def photo_losses(self, label_smoothing: float) -> Callable:
        """Categorical cross entropy per photo, times its weight."""
        import keras

        cross_entropy = keras.losses.CategoricalCrossentropy(
            label_smoothing=label_smoothing, reduction=None
        )
        return lambda targets, scores, weights: cross_entropy(targets, scores) * weights

    def loss(self, label_smoothing: float) -> Callable:
        """Keras' categorical cross entropy (mean over the batch)."""
        import keras

        cross_entropy = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
        return lambda targets, scores, weights=None: cross_entropy(
            targets, scores, sample_weight=weights
        )

    def metric(self, scores: np.ndarray, truth: np.ndarray) -> float:
        """Accuracy: the share of photos whose best score is their label."""
        return float((np.argmax(np.asarray(scores), axis=1) == truth).mean())

    def describe_metric(self, value: float) -> str:
        """`accuracy = 97.5%`."""
        return f"accuracy = {100 * value:.1f}%"

    def activate(self, logits: np.ndarray) -> np.ndarray:
        """Softmax."""
        shifted = logits - logits.max(axis=1, keepdims=True)
        exponentials = np.exp(shifted)
        return exponentials / exponentials.sum(axis=1, keepdims=True)

    def activate_tensor(self, logits):
        """Softmax."""
        import tensorflow as tf

        return tf.nn.softmax(logits)

    def given(self, scores: np.ndarray) -> np.ndarray:
        """The best score's label."""
        scores = np.asarray(scores)
        return self.indicators(scores.argmax(axis=1), scores.shape[1])

    def places(self, scores: np.ndarray, labels: Sequence[str]) -> list[Place]:
        """DEST itself, under the best label and its score."""
        best = int(np.argmax(scores))
        return [Place("", labels[best], float(scores[best]))]

    def folders(self, labels: Sequence[str]) -> list[str]:
        """None: every copy goes into DEST itself."""
        return []

    def metadata(self, labels: Sequence[str]) -> dict:
        """Nothing: tensorguess.json stays as it always was."""
        return {}


@dataclass(frozen=True)
class MultiLabel(Task):
    """Any number of labels per photo: an independent sigmoid per label, binary cross
    entropy, and a threshold per label (`thresholds`, in output order; () before they are
    chosen: 0.5 each)."""

    name = MULTI_LABEL
    multi_label = True
    activation = "sigmoid"
    metric_key = "micro_f1"
    metric_name = "micro-F1"

    thresholds: tuple[float, ...] = ()

    def truth(self, label_sets: Sequence[Sequence[str]], labels: Sequence[str]) -> np.ndarray:
        """0/1 rows [N, labels]."""
        index = {label: position for position, label in enumerate(labels)}
        truth = np.zeros((len(label_sets), len(labels)), np.float32)
        for row, given in enumerate(label_sets):
            truth[row, [index[label] for label in given]] = 1
        return truth

    def indicators(self, truth: np.ndarray, count: int) -> np.ndarray:
        """The rows as booleans."""
        return np.asarray(truth).reshape(-1, count) > 0.5

    def label_balance(self, truth: np.ndarray, count: int, balance: bool) -> np.ndarray:
        """[2, count]: the weight of a photo without each label, and with it."""
        if not balance:
            return np.ones((2, count), np.float32)
        has = self.indicators(truth, count)
        cases = np.stack([(~has).sum(axis=0), has.sum(axis=0)]).astype(np.float32)
        return np.where(cases > 0, len(has) / (2 * np.maximum(cases, 1)), 0).astype(np.float32)

    def photo_weights(self, balance: np.ndarray, truth: np.ndarray) -> np.ndarray:
        """[N, labels]: each label of each photo weighs what its case does."""
        return np.where(np.asarray(truth) > 0.5, balance[1], balance[0]).astype(np.float32)

    def photo_losses(self, label_smoothing: float) -> Callable:
        """Binary cross entropy of each label, weighted, averaged over the labels."""
        import tensorflow as tf

        def losses(targets, scores, weights):
            targets = tf.cast(targets, tf.float32) * (1 - label_smoothing) + 0.5 * label_smoothing
            scores = tf.clip_by_value(tf.cast(scores, tf.float32), EPSILON, 1 - EPSILON)
            each = -(targets * tf.math.log(scores) + (1 - targets) * tf.math.log(1 - scores))
            return tf.reduce_mean(each * weights, axis=-1)

        return losses

    def loss(self, label_smoothing: float) -> Callable:
        """The mean of `photo_losses` over the batch (weights 1 when not given)."""
        import tensorflow as tf

        losses = self.photo_losses(label_smoothing)

        def mean(targets, scores, weights=None):
            return tf.reduce_mean(losses(targets, scores, 1.0 if weights is None else weights))

        return mean

    def metric(self, scores: np.ndarray, truth: np.ndarray) -> float:
        """Micro-averaged F1 of the labels given at 0.5."""
        scores = np.asarray(scores)
        return micro_f1(self.indicators(truth, scores.shape[1]), scores >= DEFAULT_THRESHOLD)

    def describe_metric(self, value: float) -> str:
        """`micro-F1 = 0.912`."""
        return f"micro-F1 = {value:.3f}"

    def activate(self, logits: np.ndarray) -> np.ndarray:
        """Sigmoid (as tanh: no overflow for large logits)."""
        return 0.5 * (1 + np.tanh(np.asarray(logits) / 2))

    def activate_tensor(self, logits):
        """Sigmoid."""
        import tensorflow as tf

        return tf.math.sigmoid(logits)

    def threshold_array(self, count: int) -> np.ndarray:
        """The thresholds [count] (0.5 each before they are chosen)."""
        if len(self.thresholds) == count:
            return np.array(self.thresholds, np.float64)
        return np.full(count, DEFAULT_THRESHOLD)

    def given(self, scores: np.ndarray) -> np.ndarray:
        """The labels at or over their thresholds."""
        scores = np.asarray(scores)
        return scores >= self.threshold_array(scores.shape[-1])

    def answer(self, scores: np.ndarray, labels: Sequence[str]) -> tuple[str, ...]:
        """The labels at or over their thresholds, best score first."""
        given = self.given(np.asarray(scores)[None])[0]
        order = np.argsort(-np.asarray(scores), kind="stable")
        return tuple(labels[index] for index in order if given[index])

    def places(self, scores: np.ndarray, labels: Sequence[str]) -> list[Place]:
        """The folder of each label given, best first; `untagged` for a photo with none,
        named after its best label."""
        index = {label: position for position, label in enumerate(labels)}
        given = self.answer(scores, labels)
        if given:
            return [Place(label, label, float(scores[index[label]])) for label in given]
        best = int(np.argmax(scores))
        return [Place(UNTAGGED, labels[best], float(scores[best]))]

    def folders(self, labels: Sequence[str]) -> list[str]:
        """A folder per label, and `untagged`."""
        return [*labels, UNTAGGED]

    def metadata(self, labels: Sequence[str]) -> dict:
        """The task and each label's threshold (only the task before they are chosen)."""
        if not self.thresholds:
            return {"task": MULTI_LABEL}
        thresholds = self.threshold_array(len(labels))
        return {
            "task": MULTI_LABEL,
            "thresholds": {label: float(t) for label, t in zip(labels, thresholds, strict=True)},
        }

    def fitted(self, scores: np.ndarray, truth: np.ndarray) -> MultiLabel:
        """The task with each label's threshold chosen on these (validation) photos'
        `scores` [N, labels] and `truth` (0/1 or booleans, [N, labels])."""
        scores = np.asarray(scores, np.float64)
        has = np.asarray(truth) > 0.5
        chosen = tuple(
            best_f1_threshold(scores[:, column], has[:, column])
            for column in range(scores.shape[1])
        )
        return MultiLabel(chosen)


SINGLE = SingleLabel()


def task_of(model) -> Task:
    """The task of a classifier (anything with `labels` and `classify`): its `task`, or
    single-label for one that has none (a wrapper written before tasks)."""
    return getattr(model, "task", SINGLE)


def task_named(name: str | None, thresholds: Sequence[float] = ()) -> Task:
    """The task of this name (a graph's `TASK_NODE`, tensorguess.json's "task"): single-label
    when there is none."""
    if name == MULTI_LABEL:
        return MultiLabel(tuple(float(value) for value in thresholds))
    return SINGLE


def thresholds_of(metadata: dict, labels: Sequence[str]) -> tuple[float, ...]:
    """Each label's threshold as tensorguess.json records it (0.5 where it records none)."""
    recorded = metadata.get("thresholds")
    recorded = recorded if isinstance(recorded, dict) else {}
    values = []
    for label in labels:
        value = recorded.get(label)
        usable = isinstance(value, int | float) and 0 <= value <= 1 and math.isfinite(value)
        values.append(float(value) if usable else DEFAULT_THRESHOLD)
    return tuple(values)


def micro_f1(truth: np.ndarray, given: np.ndarray) -> float:
    """F1 over every (photo, label) pair at once; 1 when there is nothing to find and
    nothing was given."""
    found = int((truth & given).sum())
    wrong = int((given & ~truth).sum()) + int((truth & ~given).sum())
    return 2 * found / (2 * found + wrong) if found or wrong else 1.0


def best_f1_threshold(scores: np.ndarray, truth: np.ndarray) -> float:
    """The threshold with the best F1 on one label's (score, has it) pairs: the midpoint
    between the lowest score it accepts and the highest it refuses (ties: the higher
    threshold). `DEFAULT_THRESHOLD` when no photo has the label."""
    positives = int(truth.sum())
    if not positives:
        return DEFAULT_THRESHOLD
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], np.cumsum(truth[order])
    # Accepting the top k photos (k = 1..N), only where the next score is lower: a threshold
    # cannot part equal scores.
    accepted = np.arange(1, len(scores) + 1)
    f1 = 2 * hits / (accepted + positives)
    cut = np.append(ranked[1:] < ranked[:-1], True)
    best = int(np.argmax(np.where(cut, f1, -1)))
    below = ranked[best + 1] if best + 1 < len(ranked) else 0.0
    return float((ranked[best] + below) / 2)
