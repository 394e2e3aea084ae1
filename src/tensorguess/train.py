"""Training the head on cached features: softmax (optional hidden layer), early stopping."""

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
    learning_rate: float = 0.001
    epochs: int = 200
    batch_size: int = 64
    patience: int = 20
    report_every: int = 10
    seed: int = 0


# Validation loss must fall by more than this to count as progress for early stopping.
MIN_IMPROVEMENT = 1e-4


@dataclass
class SplitData:
    """Features and integer labels of one split."""

    features: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TrainedHead:
    """The trained layers as numpy arrays, in order: [(kernel, bias), ...], ReLU between."""

    layers: list[tuple[np.ndarray, np.ndarray]]
    test_accuracy: float | None
    test_count: int
    epochs_run: int
    history: dict[str, list[float]] = field(default_factory=dict)

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
    """Train on `train`, stop early on `validation`, then measure accuracy on `test`.

    A plain loop of compiled steps rather than `Model.fit`: on a few hundred cached
    feature vectors, fit's per-epoch overhead was 30 times the arithmetic.
    """
    import tensorflow as tf

    keras.utils.set_random_seed(options.seed)
    model = build_head(train.features.shape[1], num_classes, options)
    optimizer = keras.optimizers.Adam(options.learning_rate)
    loss_function = keras.losses.SparseCategoricalCrossentropy()

    @tf.function(reduce_retracing=True)
    def step(features, labels):
        with tf.GradientTape() as tape:
            scores = model(features, training=True)
            loss = loss_function(labels, scores)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss, scores

    @tf.function(reduce_retracing=True)
    def evaluate(features, labels):
        scores = model(features, training=False)
        return loss_function(labels, scores), scores

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
        total_loss = correct = 0.0
        for start in range(0, len(order), options.batch_size):
            rows = order[start : start + options.batch_size]
            loss, scores = step(train.features[rows], train.labels[rows])
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
    layers = [
        (layer.kernel.numpy(), layer.bias.numpy())
        for layer in model.layers
        if isinstance(layer, keras.layers.Dense)
    ]
    head = TrainedHead(
        layers=layers,
        test_accuracy=None,
        test_count=len(test),
        epochs_run=epoch,
        history=history,
    )
    if len(test):
        head.test_accuracy = _accuracy(head.probabilities(test.features), test.labels)
        report(f"Final test accuracy = {100 * head.test_accuracy:.1f}% (N={len(test)})")
    else:
        report("Final test accuracy = n/a (N=0: no test images; lower --testing_percentage?)")
    return head


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
