"""Fine-tuning: the top blocks of an embedded backbone trained together with the head.

Fine-tuning changes the features themselves, so the feature cache cannot serve it: every
epoch decodes every training photo, distorts it afresh and runs the whole backbone on it,
which takes about as long per epoch as computing the features of a cold cache. It starts
from the head trained on cached features, and keeps the weights of its best validation epoch
(the starting point included), so it never ends worse on validation than it began. The
backbone's own model is changed in place, so the export freezes the fine-tuned weights into
the same graph as always.

With two or more local GPUs it trains on all of them (`tf.distribute.MirroredStrategy`):
each takes a batch of `batch_size` photos, so a step sees `batch_size` times the number of
GPUs; the loss is divided by that global batch and the gradients summed across them, and
batch normalisation computes its statistics over the global batch, so N devices give what
one device gives with the global batch, up to float noise (tested on two logical CPUs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from tensorguess.augment import distort
from tensorguess.backbones import Backbone
from tensorguess.errors import TensorguessError
from tensorguess.head import (
    Say,
    TrainedHead,
    build_head,
    dense_layers,
    label_weights,
    run_epochs,
)
from tensorguess.images import pixel_batches
from tensorguess.options import DistortionOptions, FineTuneOptions, HeadOptions


@dataclass
class LabelledPaths:
    """Photos of one split and their integer labels."""

    paths: Sequence[Path]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def split_backbone(backbone: Backbone, blocks: int) -> tuple[keras.Model, keras.Model]:
    """(frozen bottom, trainable top): the top is the last `blocks` blocks and the head conv.

    Both share the backbone model's layers, so training the top changes the backbone.
    """
    return _split(getattr(backbone, "model", None), blocks, backbone.name)


def _split(model, blocks: int, name: str) -> tuple[keras.Model, keras.Model]:
    layers = model.layers if isinstance(model, keras.Model) else []
    indices = sorted(
        {int(layer.name[5:].split("_")[0]) for layer in layers if layer.name[:5] == "block"}
    )
    if not indices:
        raise TensorguessError(
            f"--fine_tune works with the efficientnet_lite backbones only, not {name}"
        )
    if not 1 <= blocks < len(indices):
        raise TensorguessError(
            f"--fine_tune_blocks must be between 1 and {len(indices) - 1} for this backbone"
        )
    last_frozen = indices[-blocks - 1]
    names = {layer.name for layer in model.layers}
    cut = f"block{last_frozen}_add"
    if cut not in names:
        cut = f"block{last_frozen}_project_conv"
    boundary = model.get_layer(cut).output
    return keras.Model(model.input, boundary), keras.Model(boundary, model.output)


def fine_tune(
    backbone: Backbone,
    head: TrainedHead,
    head_options: HeadOptions,
    train: LabelledPaths,
    validation: LabelledPaths,
    test: LabelledPaths,
    distortions: DistortionOptions,
    options: FineTuneOptions,
    seed: int = 0,
    say: Say = print,
    devices: Sequence[str] | None = None,
) -> TrainedHead:
    """Fine-tune the top `options.blocks` blocks and the head; return the new head.

    `devices` to train on (default: every local GPU); with fewer than two, the one device.
    """
    import tensorflow as tf

    strategy = distribution(devices)
    replicas = strategy.num_replicas_in_sync
    global_batch = options.batch_size * replicas
    split_backbone(backbone, options.blocks)  # refuse a backbone it cannot tune, whatever runs
    model = backbone.model
    num_classes = head.layers[-1][1].shape[0]
    steps = options.epochs * -(-len(train) // global_batch)
    with strategy.scope():
        if replicas > 1:  # mirrored on every device; copied back into the backbone at the end
            model = keras.models.clone_model(model, clone_function=_synchronized)
            model.set_weights(backbone.model.get_weights())
        bottom, top = _split(model, options.blocks, backbone.name)
        classifier = build_head(backbone.feature_dim, num_classes, head_options)
        classifier.set_weights([array for layer in head.layers for array in layer])
        optimizer = keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(options.learning_rate, decay_steps=steps)
        )
        trainable = top.trainable_weights + classifier.trainable_weights
        optimizer.build(trainable)  # its variables now, mirrored, not inside the first step
    loss_function = keras.losses.CategoricalCrossentropy(
        label_smoothing=head_options.label_smoothing
    )
    photo_losses = keras.losses.CategoricalCrossentropy(
        label_smoothing=head_options.label_smoothing, reduction=None
    )
    weights = label_weights(train.labels, num_classes, head_options.class_weights == "balanced")
    size = backbone.image_size

    def replica_step(pixels, labels, seeds, photos):
        if distortions.distorts:
            pixels = distort(pixels, seeds, distortions, size)
        # The frozen bottom runs outside the tape: no activations kept for it.
        boundary = bottom(backbone.preprocess(pixels), training=False)
        with tf.GradientTape() as tape:
            scores = classifier(top(boundary, training=True), training=True)
            targets = tf.one_hot(labels, num_classes)
            # Divided by the photos of the whole step: the replicas' gradients are summed.
            loss = tf.reduce_sum(photo_losses(targets, scores) * tf.gather(weights, labels))
            loss = loss / photos
        optimizer.apply_gradients(zip(tape.gradient(loss, trainable), trainable, strict=True))
        return loss, scores

    @tf.function(reduce_retracing=True)
    def distributed_step(pixels, labels, seeds, photos):
        losses, scores = strategy.run(replica_step, args=(pixels, labels, seeds, photos))
        total = strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)
        return total, tf.concat(strategy.experimental_local_results(scores), axis=0)

    def step(pixels: np.ndarray, labels: np.ndarray, seeds: np.ndarray):
        """One step on a global batch, split in equal shares over the replicas, in order."""
        shares = [
            (pixels[rows].astype(np.float32), labels[rows], seeds[rows])
            for rows in np.array_split(np.arange(len(labels)), replicas)
        ]
        values = [
            strategy.experimental_distribute_values_from_function(
                lambda context, part=part: shares[context.replica_id_in_sync_group][part]
            )
            for part in range(3)
        ]
        return distributed_step(*values, tf.constant(len(labels), tf.float32))

    @tf.function(reduce_retracing=True)
    def scores_of(pixels):
        return classifier(model(backbone.preprocess(pixels), training=False), training=False)

    def measure(split: LabelledPaths) -> tuple[float, float, np.ndarray]:
        """Cross entropy, accuracy and scores of a split with the current weights."""
        scores = _predict(scores_of, split.paths, size, options.batch_size, num_classes)
        if not len(split):
            return 0.0, 0.0, scores
        targets = np.eye(num_classes, dtype=np.float32)[split.labels]
        loss = float(loss_function(targets, scores))
        return loss, float((scores.argmax(axis=1) == split.labels).mean()), scores

    rng = np.random.default_rng(seed)

    def train_epoch() -> tuple[float, float]:
        order = rng.permutation(len(train))
        paths = [train.paths[i] for i in order]
        total_loss = correct = 0.0
        start = seen = 0
        for pixels, _ in pixel_batches(paths, size, global_batch):
            labels = train.labels[order[start : start + len(pixels)]]
            seeds = rng.integers(0, 2**31 - 1, size=(len(labels), 2))
            start += len(labels)
            if len(labels) < replicas:
                continue  # a last handful too few to share out: shuffled in next epoch
            loss, scores = step(pixels, labels, seeds)
            total_loss += float(loss) * len(labels)
            correct += int((np.argmax(scores, axis=1) == labels).sum())
            seen += len(labels)
        return total_loss / seen, correct / seen

    distorting = f", distorted afresh ({distortions.settings()})" if distortions.distorts else ""
    devices_used = ""
    if replicas > 1:
        devices_used = f", on {replicas} devices ({global_batch} photos a step)"
    say(
        f"Fine-tuning the top {options.blocks} blocks of {backbone.name} for up to "
        f"{options.epochs} epochs: the feature cache cannot help here, so each epoch runs "
        f"the backbone on all {len(train)} training photos{distorting}{devices_used}"
    )
    monitored = validation if len(validation) else train
    epochs = run_epochs(
        options.epochs,
        train_epoch,
        lambda: measure(monitored)[:2],
        lambda: [weight.numpy() for weight in trainable],
        len(validation),
        say,
        title="Fine-tune epoch",
        start_counts=True,
    )
    for weight, value in zip(trainable, epochs.best_weights, strict=True):
        weight.assign(value)
    if model is not backbone.model:
        backbone.model.set_weights(model.get_weights())

    history = {f"fine_tune_{key}": value for key, value in epochs.history.items()}
    tuned = TrainedHead(
        layers=dense_layers(classifier),
        test_accuracy=None,
        test_count=len(test),
        epochs_run=head.epochs_run,
        history={**head.history, **history},
    )
    _, accuracy, tuned.test_scores = measure(test)
    tuned.test_accuracy = accuracy if len(test) else None
    return tuned


def distribution(devices: Sequence[str] | None = None):
    """MirroredStrategy over `devices` (default: every local GPU) when there are two or
    more, else TensorFlow's default strategy (one device, as without any)."""
    import tensorflow as tf

    if devices is None:
        devices = [device.name for device in tf.config.list_logical_devices("GPU")]
    if len(devices) < 2:
        return tf.distribute.get_strategy()
    return tf.distribute.MirroredStrategy(list(devices))


def _synchronized(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A copy of `layer` for the mirrored model: batch normalisation over the global batch."""
    config = layer.get_config()
    if isinstance(layer, keras.layers.BatchNormalization):
        config["synchronized"] = True
    return layer.__class__.from_config(config)


def _predict(
    scores_of, paths: Sequence[Path], size: int, batch_size: int, num_classes: int
) -> np.ndarray:
    import tensorflow as tf

    batches = [
        scores_of(tf.cast(pixels, tf.float32)).numpy()
        for pixels, _ in pixel_batches(paths, size, batch_size)
    ]
    return np.concatenate(batches) if batches else np.zeros((0, num_classes), np.float32)
