"""Training the head on cached features: softmax (optional hidden layer), early stopping.

Label smoothing, per-label weights and a learning-rate schedule are options; each epoch may
show a photo as one of its cached distorted views (augment.py) instead of itself. The epoch
loop (`run_epochs`: history, best weights, early stopping, the progress line) also drives
fine-tuning. A multi-label head has a sigmoid per label instead of the softmax; the task
(classify/task.py) says what else differs: loss, targets, weights, the figure of an epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np

from tensorguess.classify.task import SINGLE, Task
from tensorguess.training.options import HeadOptions

# Validation loss must fall by more than this to count as progress for early stopping.
MIN_IMPROVEMENT = 1e-4
# The head's epochs take milliseconds: one progress line per this many.
REPORT_EVERY = 10
Say = Callable[[str], None]


@dataclass
class SplitData:
    """Features and true labels of one split (as `Task.truth` gives them: label indices, or
    0/1 rows for multi-label); `views` [V, N, D] are distorted copies."""

    features: np.ndarray
    labels: np.ndarray
    views: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TrainedHead:
    """The trained layers as numpy arrays, in order: [(kernel, bias), ...], ReLU between,
    then the `task`'s activation.

    `test_scores` [N, labels] are the scores of the test photos, for the evaluation;
    `test_accuracy` the task's figure on them (accuracy, or micro-F1 at 0.5).
    `tuned_features`: after fine-tuning, the features the tuned backbone gives the
    training and validation photos ("train", "validation"), when it could compute them.
    """

    layers: list[tuple[np.ndarray, np.ndarray]]
    test_accuracy: float | None
    test_count: int
    epochs_run: int
    history: dict[str, list[float]] = field(default_factory=dict)
    test_scores: np.ndarray | None = None
    task: Task = SINGLE
    tuned_features: dict[str, np.ndarray] | None = None

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Scores for a batch of features (numpy; for evaluation and tests)."""
        activations = features
        for depth, (kernel, bias) in enumerate(self.layers):
            activations = activations @ kernel + bias
            if depth < len(self.layers) - 1:
                activations = np.maximum(activations, 0)
        return self.task.activate(activations)


def build_head(feature_dim: int, num_classes: int, options: HeadOptions, task: Task = SINGLE):
    """The Keras head: [Dropout, Dense+ReLU,] Dropout, Dense+softmax (the task's activation)."""
    layers = [keras.Input(shape=(feature_dim,))]
    if options.hidden_units:
        if options.dropout:
            layers.append(keras.layers.Dropout(options.dropout))
        layers.append(keras.layers.Dense(options.hidden_units, activation="relu"))
    if options.dropout:
        layers.append(keras.layers.Dropout(options.dropout))
    layers.append(keras.layers.Dense(num_classes, activation=task.activation, name="final_result"))
    return keras.Sequential(layers)


@dataclass
class Epochs:
    """What `run_epochs` did: the figures of each epoch, how many ran, the best weights."""

    history: dict[str, list[float]]
    epochs_run: int
    best_weights: list[np.ndarray]


def run_epochs(
    epochs: int,
    train_epoch: Callable[[], tuple[float, float]],
    measure: Callable[[], tuple[float, float]] | None,
    weights: Callable[[], list[np.ndarray]],
    validation_count: int,
    say: Say,
    title: str = "Epoch",
    patience: int | None = None,
    report_every: int = 1,
    start_counts: bool = False,
    task: Task = SINGLE,
) -> Epochs:
    """Train epoch after epoch, keeping the weights of the best one on validation.

    `train_epoch()` runs one epoch and returns its training (cross entropy, the task's
    figure: accuracy, or micro-F1); `measure()` returns them on the validation split (or on
    the training one when there is none); without `measure`, every epoch runs and the last
    one's weights are kept. Stops after `patience` epochs without progress; with
    `start_counts`, the weights before the first epoch compete too, so the result is never
    worse than the start.
    """
    key = task.metric_key
    history: dict[str, list[float]] = {"loss": [], key: []}
    if validation_count:
        history.update({"val_loss": [], f"val_{key}": []})
    best_loss = measure()[0] if start_counts and measure is not None else float("inf")
    # Without a measure the last epoch's weights are taken at the end: no copy to keep.
    best_weights, best_epoch = (weights() if measure is not None else []), 0
    epoch = 0
    for epoch in range(1, epochs + 1):
        started = time.monotonic()
        loss, figure = train_epoch()
        history["loss"].append(loss)
        history[key].append(figure)
        if measure is None:
            best_epoch = epoch
        else:
            monitored_loss, monitored_figure = measure()
            if validation_count:
                history["val_loss"].append(monitored_loss)
                history[f"val_{key}"].append(monitored_figure)
            if monitored_loss < best_loss - MIN_IMPROVEMENT:
                best_loss, best_weights, best_epoch = monitored_loss, weights(), epoch
        last = epoch == epochs or (patience is not None and epoch - best_epoch >= patience)
        if epoch == 1 or epoch % report_every == 0 or last:
            line = _progress_line(title, epoch, history, validation_count, task)
            if report_every == 1:  # slow epochs: say how slow
                line += f" ({time.monotonic() - started:.0f} s)"
            say(line)
        if last:
            break
    return Epochs(history, epoch, weights() if measure is None else best_weights)


def train_head(
    train: SplitData,
    validation: SplitData,
    test: SplitData,
    num_classes: int,
    options: HeadOptions,
    seed: int = 0,
    say: Say = print,
    task: Task = SINGLE,
) -> TrainedHead:
    """Train on `train`, stop early on `validation`, then score `test`.

    A plain loop of compiled steps rather than `Model.fit`: on a few hundred cached
    feature vectors, fit's per-epoch overhead was 30 times the arithmetic.
    """
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    model = build_head(train.features.shape[1], num_classes, options, task)
    steps_per_epoch = -(-len(train) // options.batch_size)
    optimizer = keras.optimizers.Adam(learning_rate(options, steps_per_epoch))
    # Dense targets: Keras' sparse loss has no label smoothing.
    loss_function = task.loss(options.label_smoothing)
    balance = task.label_balance(train.labels, num_classes, options.class_weights == "balanced")
    targets = task.targets(train.labels, num_classes)
    weights = task.photo_weights(balance, train.labels)

    @tf.function(reduce_retracing=True)
    def step(features, targets, weights):
        with tf.GradientTape() as tape:
            scores = model(features, training=True)
            loss = loss_function(targets, scores, weights)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss, scores

    @tf.function(reduce_retracing=True)
    def evaluate(features, targets):
        scores = model(features, training=False)
        return loss_function(targets, scores), scores

    rng = np.random.default_rng(seed)

    def train_epoch() -> tuple[float, float]:
        order = rng.permutation(len(train))
        features = epoch_features(train, rng)
        total_loss = 0.0
        scores = np.zeros((len(train), num_classes), np.float32)
        for start in range(0, len(order), options.batch_size):
            rows = order[start : start + options.batch_size]
            loss, scores[rows] = step(features[rows], targets[rows], weights[rows])
            total_loss += float(loss) * len(rows)
        return total_loss / len(train), task.metric(scores, train.labels)

    monitored = validation if len(validation) else train
    monitored_targets = task.targets(monitored.labels, num_classes)

    def measure() -> tuple[float, float]:
        loss, scores = evaluate(monitored.features, monitored_targets)
        return float(loss), task.metric(scores, monitored.labels)

    epochs = run_epochs(
        options.epochs,
        train_epoch,
        measure,
        model.get_weights,
        len(validation),
        say,
        patience=options.patience,
        report_every=REPORT_EVERY,
        task=task,
    )
    model.set_weights(epochs.best_weights)
    head = TrainedHead(
        layers=dense_layers(model),
        test_accuracy=None,
        test_count=len(test),
        epochs_run=epochs.epochs_run,
        history=epochs.history,
        task=task,
    )
    head.test_scores = head.probabilities(test.features)
    if len(test):
        head.test_accuracy = task.metric(head.test_scores, test.labels)
    return head


def dense_layers(model: keras.Model) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kernel, bias) of each Dense layer of `model`, in order: a head as numpy arrays."""
    return [
        (layer.kernel.numpy(), layer.bias.numpy())
        for layer in model.layers
        if isinstance(layer, keras.layers.Dense)
    ]


def learning_rate(options: HeadOptions, steps_per_epoch: int):
    """The optimizer's learning rate: constant, or a cosine decay to zero over `epochs`."""
    if options.learning_rate_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            options.learning_rate, decay_steps=options.epochs * steps_per_epoch
        )
    return options.learning_rate


def label_weights(labels: np.ndarray, num_classes: int, balance: bool) -> np.ndarray:
    """Per-label loss weights: 1, or inversely proportional to the label's share when balancing."""
    return SINGLE.label_balance(labels, num_classes, balance)


def epoch_features(train: SplitData, rng: np.random.Generator) -> np.ndarray:
    """This epoch's training features: each photo as itself or one of its distorted views."""
    if train.views is None or not len(train.views):
        return train.features
    choice = rng.integers(0, len(train.views) + 1, size=len(train))
    features = train.features.copy()
    (distorted,) = np.nonzero(choice)
    features[distorted] = train.views[choice[distorted] - 1, distorted]
    return features


def _progress_line(
    title: str, epoch: int, history: dict[str, list[float]], validation_count: int, task: Task
) -> str:
    """retrain.py's progress line for one epoch (a multi-label one gives micro-F1 instead of
    accuracy)."""
    key = task.metric_key
    line = (
        f"{title} {epoch}: train {task.describe_metric(history[key][-1])}, "
        f"cross entropy = {history['loss'][-1]:.3f}"
    )
    if validation_count:
        line += (
            f", validation {task.describe_metric(history[f'val_{key}'][-1])} (N={validation_count})"
        )
    return line
