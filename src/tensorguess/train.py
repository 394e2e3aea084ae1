"""Training the head on cached features: softmax (optional hidden layer), early stopping.

Label smoothing, per-label weights and a learning-rate schedule are options; each epoch may
show a photo as one of its cached distorted views (augment.py) instead of itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np


@dataclass(frozen=True)
class HeadOptions:
    """How the head is trained; the defaults suit a few hundred photos per label."""

    hidden_units: int = 0
    dropout: float = 0.0
    label_smoothing: float = 0.0
    balance_labels: bool = False
    learning_rate: float = 0.001
    schedule: str = "constant"
    epochs: int = 200
    batch_size: int = 64
    patience: int = 20
    report_every: int = 10
    seed: int = 0


# Validation loss must fall by more than this to count as progress for early stopping.
MIN_IMPROVEMENT = 1e-4


@dataclass
class SplitData:
    """Features and integer labels of one split; `views` [V, N, D] are distorted copies."""

    features: np.ndarray
    labels: np.ndarray
    views: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TrainedHead:
    """The trained layers as numpy arrays, in order: [(kernel, bias), ...], ReLU between.

    `test_scores` [N, labels] are the softmax scores of the test photos, for the evaluation.
    """

    layers: list[tuple[np.ndarray, np.ndarray]]
    test_accuracy: float | None
    test_count: int
    epochs_run: int
    history: dict[str, list[float]] = field(default_factory=dict)
    test_scores: np.ndarray | None = None

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Softmax scores for a batch of features (numpy; for evaluation and tests)."""
        activations = features
        for depth, (kernel, bias) in enumerate(self.layers):
            activations = activations @ kernel + bias
            if depth < len(self.layers) - 1:
                activations = np.maximum(activations, 0)
        activations = activations - activations.max(axis=1, keepdims=True)
        exponentials = np.exp(activations)
        return exponentials / exponentials.sum(axis=1, keepdims=True)


def build_head(feature_dim: int, num_classes: int, options: HeadOptions):
    """The Keras head: [Dropout, Dense+ReLU,] Dropout, Dense+softmax."""
    layers = [keras.Input(shape=(feature_dim,))]
    if options.hidden_units:
        if options.dropout:
            layers.append(keras.layers.Dropout(options.dropout))
        layers.append(keras.layers.Dense(options.hidden_units, activation="relu"))
    if options.dropout:
        layers.append(keras.layers.Dropout(options.dropout))
    layers.append(keras.layers.Dense(num_classes, activation="softmax", name="final_result"))
    return keras.Sequential(layers)


def train_head(
    train: SplitData,
    validation: SplitData,
    test: SplitData,
    num_classes: int,
    options: HeadOptions,
    report: Callable[[str], None] = print,
) -> TrainedHead:
    """Train on `train`, stop early on `validation`, then score `test`.

    A plain loop of compiled steps rather than `Model.fit`: on a few hundred cached
    feature vectors, fit's per-epoch overhead was 30 times the arithmetic.
    """
    import tensorflow as tf

    keras.utils.set_random_seed(options.seed)
    model = build_head(train.features.shape[1], num_classes, options)
    steps_per_epoch = -(-len(train) // options.batch_size)
    optimizer = keras.optimizers.Adam(learning_rate(options, steps_per_epoch))
    # One-hot targets: Keras' sparse loss has no label smoothing.
    loss_function = keras.losses.CategoricalCrossentropy(label_smoothing=options.label_smoothing)
    weights = label_weights(train.labels, num_classes, options.balance_labels)

    @tf.function(reduce_retracing=True)
    def step(features, labels):
        targets = tf.one_hot(labels, num_classes)
        with tf.GradientTape() as tape:
            scores = model(features, training=True)
            loss = loss_function(targets, scores, sample_weight=tf.gather(weights, labels))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss, scores

    @tf.function(reduce_retracing=True)
    def evaluate(features, labels):
        scores = model(features, training=False)
        return loss_function(tf.one_hot(labels, num_classes), scores), scores

    has_validation = len(validation) > 0
    monitored = validation if has_validation else train
    history: dict[str, list[float]] = {"loss": [], "accuracy": []}
    if has_validation:
        history.update(val_loss=[], val_accuracy=[])
    best_loss, best_weights, best_epoch = float("inf"), model.get_weights(), 0
    rng = np.random.default_rng(options.seed)
    epoch = 0
    for epoch in range(1, options.epochs + 1):
        order = rng.permutation(len(train))
        features = epoch_features(train, rng)
        total_loss = correct = 0.0
        for start in range(0, len(order), options.batch_size):
            rows = order[start : start + options.batch_size]
            loss, scores = step(features[rows], train.labels[rows])
            total_loss += float(loss) * len(rows)
            correct += int((np.argmax(scores, axis=1) == train.labels[rows]).sum())
        history["loss"].append(total_loss / len(train))
        history["accuracy"].append(correct / len(train))
        loss, scores = evaluate(monitored.features, monitored.labels)
        if has_validation:
            history["val_loss"].append(float(loss))
            history["val_accuracy"].append(_accuracy(scores, validation.labels))
        if float(loss) < best_loss - MIN_IMPROVEMENT:
            best_loss, best_weights, best_epoch = float(loss), model.get_weights(), epoch
        last = epoch - best_epoch >= options.patience or epoch == options.epochs
        if epoch == 1 or epoch % options.report_every == 0 or last:
            report(_progress_line(epoch, history, len(validation)))
        if last:
            break
    model.set_weights(best_weights)
    head = TrainedHead(
        layers=dense_layers(model),
        test_accuracy=None,
        test_count=len(test),
        epochs_run=epoch,
        history=history,
    )
    head.test_scores = head.probabilities(test.features)
    if len(test):
        head.test_accuracy = _accuracy(head.test_scores, test.labels)
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
    if options.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            options.learning_rate, decay_steps=options.epochs * steps_per_epoch
        )
    return options.learning_rate


def label_weights(labels: np.ndarray, num_classes: int, balance: bool) -> np.ndarray:
    """Per-label loss weights: 1, or inversely proportional to the label's share when balancing."""
    if not balance:
        return np.ones(num_classes, np.float32)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float32)
    # A label with no training photo gets weight 0; training refuses that case earlier anyway.
    return np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0).astype(
        np.float32
    )


def epoch_features(train: SplitData, rng: np.random.Generator) -> np.ndarray:
    """This epoch's training features: each photo as itself or one of its distorted views."""
    if train.views is None or not len(train.views):
        return train.features
    choice = rng.integers(0, len(train.views) + 1, size=len(train))
    features = train.features.copy()
    (distorted,) = np.nonzero(choice)
    features[distorted] = train.views[choice[distorted] - 1, distorted]
    return features


def _accuracy(scores, labels: np.ndarray) -> float:
    return float((np.argmax(np.asarray(scores), axis=1) == labels).mean())


def _progress_line(epoch: int, history: dict[str, list[float]], validation_count: int) -> str:
    """retrain.py's progress line for one epoch."""
    line = (
        f"Epoch {epoch}: train accuracy = {100 * history['accuracy'][-1]:.1f}%, "
        f"cross entropy = {history['loss'][-1]:.3f}"
    )
    if "val_accuracy" in history:
        line += (
            f", validation accuracy = {100 * history['val_accuracy'][-1]:.1f}% "
            f"(N={validation_count})"
        )
    return line
