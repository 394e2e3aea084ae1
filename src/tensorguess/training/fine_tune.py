"""Fine-tuning: the top blocks of an embedded backbone trained together with the head.

Fine-tuning changes the features themselves, so the feature cache cannot serve it. The
frozen bottom of the backbone does not change, though: its output for each photo (the
"boundary", features/boundaries.py) is computed once (by the training run, in the same pass
as the features; else here), and every epoch runs only the top blocks on it: several times
faster than running the whole backbone each epoch. Of the top blocks, the expanding and
projecting convolutions (and the backbone's last) learn; the depthwise ones keep their
pretrained weights, which costs no accuracy and saves a fifth of each step. The tuned
features of the training and validation photos, which the novelty score is fitted on, come
from the same boundaries.
With distortions, or with TrivialAugment (`augment`, one random operation per photo and
epoch), every epoch decodes every training photo, changes it, and runs the frozen bottom on
it on the engine that stored the boundaries (OpenVINO on a CPU: twice TensorFlow's speed);
the validation and test photos are never changed, so their stored boundaries still serve.
It starts from the head trained on cached features. By default (`on_validation`,
single-label) it learns from the validation photos too, for all its epochs, and keeps the
last: on clothing-extra that scored higher than keeping the best validation epoch of a run
without them (docs/accuracy.md). Otherwise it keeps the weights of its best validation epoch (the
starting point included), so it never ends worse on validation than it began; training
does that for a multi-label model, whose thresholds are chosen on the validation photos
afterwards (pipeline.py). The test photos never train. The backbone's own model is changed
in place, so the export freezes the fine-tuned weights into the same graph as always.

With two or more local GPUs it trains on all of them (`tf.distribute.MirroredStrategy`):
each takes a batch of `batch_size` photos, so a step sees `batch_size` times the number of
GPUs; the loss is divided by that global batch and the gradients summed across them, and
batch normalisation computes its statistics over the global batch, so N devices give what
one device gives with the global batch, up to float noise (tested on two logical CPUs).
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from tensorguess.data.dataset import TRAIN, VALIDATION
from tensorguess.data.images import pixel_batches
from tensorguess.features.backbones import Backbone
from tensorguess.features.boundaries import (
    StoredBoundaries,
    bottom_runner,
    split_backbone,
    split_model,
    store_boundaries,
)
from tensorguess.features.engines import Runner
from tensorguess.training.augment import distort, trivial_augment
from tensorguess.training.head import (
    Say,
    TrainedHead,
    build_head,
    dense_layers,
    run_epochs,
)
from tensorguess.training.options import DistortionOptions, FineTuneOptions, HeadOptions


@dataclass
class LabelledPaths:
    """Photos of one split and their true labels (as `Task.truth` gives them); `rows`: where
    their boundaries are in the `StoredBoundaries` handed to `fine_tune`, if any."""

    paths: Sequence[Path]
    labels: np.ndarray
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


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
    engine: str | None = None,
    stored: StoredBoundaries | None = None,
    tuned_features: bool = False,
) -> TrainedHead:
    """Fine-tune the top `options.blocks` blocks and the head; return the new head.

    `devices` to train on (default: every local GPU); with fewer than two, the one device.
    `engine` computes the frozen bottom's output (as `engines.resolved_engine` reads it),
    unless `stored` holds it already (each split's `rows` say where). `tuned_features`: the
    head also carries the tuned features of the training and validation photos
    (`TrainedHead.tuned_features`), from their stored boundaries (stored here when needed).
    """
    import tensorflow as tf

    strategy = distribution(devices)
    replicas = strategy.num_replicas_in_sync
    global_batch = options.batch_size * replicas
    split_backbone(backbone, options.blocks)  # refuses a backbone it cannot tune
    model = backbone.model
    task = head.task
    num_classes = head.layers[-1][1].shape[0]
    # The photos it learns from: the validation ones too when they are not to choose anything
    # (the caller turns `on_validation` off when something is chosen on them later).
    joined = options.on_validation and len(validation) > 0
    fitted = _joined(train, validation) if joined else train
    steps = options.epochs * -(-len(fitted) // global_batch)
    with strategy.scope():
        if replicas > 1:  # mirrored on every device; copied back into the backbone at the end
            model = keras.models.clone_model(model, clone_function=_synchronized)
            model.set_weights(backbone.model.get_weights())
        _, top = split_model(model, options.blocks, backbone.name)
        _keep_depthwise(top)
        classifier = build_head(backbone.feature_dim, num_classes, head_options, task)
        classifier.set_weights([array for layer in head.layers for array in layer])
        optimizer = keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(options.learning_rate, decay_steps=steps)
        )
        trainable = top.trainable_weights + classifier.trainable_weights
        optimizer.build(trainable)  # its variables now, mirrored, not inside the first step
    loss_function = task.loss(head_options.label_smoothing)
    photo_losses = task.photo_losses(head_options.label_smoothing)
    balanced = head_options.class_weights == "balanced"
    balance = task.label_balance(fitted.labels, num_classes, balanced)
    size = backbone.image_size
    augments = options.augment == "trivial"

    @tf.function(reduce_retracing=True)
    def changed(pixels, seeds):
        pixels = tf.cast(pixels, tf.float32)
        if distortions.distorts:
            pixels = distort(pixels, seeds, distortions, size)
        if augments:
            pixels = trivial_augment(pixels, seeds)
        return tf.cast(tf.round(pixels), tf.uint8)  # whole pixels, as the decoder gives

    def replica_step(boundary, targets, photo_weights, photos):
        with tf.GradientTape() as tape:
            scores = classifier(top(boundary, training=True), training=True)
            # Divided by the photos of the whole step: the replicas' gradients are summed.
            loss = tf.reduce_sum(photo_losses(targets, scores, photo_weights)) / photos
        optimizer.apply_gradients(zip(tape.gradient(loss, trainable), trainable, strict=True))
        return loss, scores

    @tf.function(reduce_retracing=True)
    def distributed_step(boundary, targets, photo_weights, photos):
        losses, scores = strategy.run(replica_step, args=(boundary, targets, photo_weights, photos))
        total = strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)
        return total, tf.concat(strategy.experimental_local_results(scores), axis=0)

    def step(boundary: np.ndarray, labels: np.ndarray):
        """One step on a global batch, split in equal shares over the replicas, in order;
        returns its loss, its scores and the labels each photo counts as (mixup: the larger
        share of the pair)."""
        targets = task.targets(labels, num_classes)
        photo_weights = task.photo_weights(balance, labels)
        if options.mixup:
            boundary, targets, photo_weights, labels = _mixed(
                rng, options.mixup, boundary, targets, photo_weights, labels
            )
        parts = (boundary, targets, photo_weights)
        shares = [
            tuple(part[rows] for part in parts)
            for rows in np.array_split(np.arange(len(labels)), replicas)
        ]
        values = [
            strategy.experimental_distribute_values_from_function(
                lambda context, part=part: shares[context.replica_id_in_sync_group][part]
            )
            for part in range(len(parts))
        ]
        loss, scores = distributed_step(*values, tf.constant(len(labels), tf.float32))
        return loss, scores, labels

    @tf.function(reduce_retracing=True)
    def features_of(boundary):
        return top(boundary, training=False)

    @tf.function(reduce_retracing=True)
    def scores_of(boundary):
        return classifier(features_of(boundary), training=False)

    rng = np.random.default_rng(seed)
    scratch = tempfile.TemporaryDirectory(prefix="tensorguess-fine-tune-")
    boundaries: dict[int, np.ndarray | _Rows] = {}
    mirrors: np.ndarray | None = None  # the training photos' mirror images' boundaries
    # Mirroring is the one distortion whose views can be stored: two per photo.
    stores_mirrors = distortions.mirrors_only and not augments
    changes_each_epoch = distortions.alters_pixels or augments

    @functools.cache
    def bottom() -> Runner:
        """The frozen bottom on `engine`, built (in this thread) when first needed."""
        return bottom_runner(backbone, options.blocks, engine)

    def batches(split: LabelledPaths, order: np.ndarray, training: bool) -> Iterator:
        """(boundary batch, rows of `split`) in `order`: from the stored boundaries (in
        training, each photo's or its mirror image's at random when mirrors are stored), or,
        in training with distortions or TrivialAugment, by running the frozen bottom on
        photos changed afresh."""
        if training and changes_each_epoch:
            for pixels, rows in changed_pixels(split, order):
                yield bottom()(pixels), rows
            return
        stored = boundaries[id(split)]
        for start in range(0, len(order), global_batch):
            rows = order[start : start + global_batch]
            if mirrors is None or not training:
                yield stored[rows], rows
                continue
            flip = rng.random(len(rows)) < 0.5
            batch = np.empty((len(rows), *stored.shape[1:]), stored.dtype)
            batch[~flip], batch[flip] = stored[rows[~flip]], mirrors[rows[flip]]
            yield batch, rows

    def changed_pixels(split: LabelledPaths, order: np.ndarray) -> Iterator:
        """(uint8 pixels changed afresh, rows of `split`) in `order`, batch by batch."""
        start = 0
        for pixels, _ in pixel_batches([split.paths[i] for i in order], size, global_batch):
            rows = order[start : start + len(pixels)]
            start += len(rows)
            seeds = rng.integers(0, 2**31 - 1, size=(len(rows), 2))
            yield changed(pixels, seeds).numpy(), rows

    def measure(split: LabelledPaths) -> tuple[float, float, np.ndarray]:
        """Cross entropy, the task's figure and scores of a split with the current weights."""
        parts = [
            scores_of(boundary).numpy()
            for boundary, _ in batches(split, np.arange(len(split)), training=False)
        ]
        scores = np.concatenate(parts) if parts else np.zeros((0, num_classes), np.float32)
        if not len(split):
            return 0.0, 0.0, scores
        loss = float(loss_function(task.targets(split.labels, num_classes), scores))
        return loss, task.metric(scores, split.labels), scores

    def split_features(split: LabelledPaths) -> np.ndarray:
        """The split's features by the tuned backbone, from its stored boundaries."""
        parts = [
            features_of(boundary).numpy()
            for boundary, _ in batches(split, np.arange(len(split)), training=False)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, backbone.feature_dim), np.float32)

    def train_epoch() -> tuple[float, float]:
        total_loss = 0.0
        seen: list[tuple[np.ndarray, np.ndarray]] = []
        for boundary, rows in batches(fitted, rng.permutation(len(fitted)), training=True):
            if len(rows) < replicas:
                continue  # a last handful too few to share out: shuffled in next epoch
            loss, scores, labels = step(boundary, fitted.labels[rows])
            total_loss += float(loss) * len(rows)
            seen.append((np.asarray(scores), labels))
        scores, labels = (np.concatenate(part) for part in zip(*seen, strict=True))
        return total_loss / len(labels), task.metric(scores, labels)

    devices_used = ""
    if replicas > 1:
        devices_used = f", on {replicas} devices ({global_batch} photos a step)"
    epochs_said = f"for {options.epochs} epochs" if joined else f"for up to {options.epochs} epochs"
    learns_from = f"{len(train)} training photos"
    if joined:
        learns_from = (
            f"{len(train)} training and {len(validation)} validation photos together (the "
            "last epoch is kept; --no-fine_tune_on_validation keeps the best validation one)"
        )
    if changes_each_epoch:
        changes = ", ".join(
            [distortions.settings()] * distortions.distorts
            + ["TrivialAugment: one random operation a photo"] * augments
        )
        say(
            f"Fine-tuning the top {options.blocks} blocks of {backbone.name} {epochs_said}: "
            "the feature cache cannot help here, so each epoch runs the frozen blocks on the "
            f"{learns_from}, changed afresh ({changes}){devices_used}"
        )
    else:
        say(
            f"Fine-tuning the top {options.blocks} blocks of {backbone.name} {epochs_said}: "
            "the feature cache cannot help here; the frozen blocks run once on all "
            f"{len(train) + len(validation) + len(test)} photos, then each epoch trains the "
            f"top blocks on the {learns_from}{devices_used}"
            + (", on each photo or its mirror image" if stores_mirrors else "")
            + (f", photos mixed in pairs (mixup {options.mixup:g})" if options.mixup else "")
        )
    monitored = validation if len(validation) else train
    with scratch:
        for number, split in enumerate((fitted, test) if joined else (train, validation, test)):
            if stored is not None and split.rows is not None:
                boundaries[id(split)] = _Rows(stored.values, split.rows)
                continue
            file = Path(scratch.name) / f"{number}.npy"
            boundaries[id(split)] = store_boundaries(bottom(), split.paths, size, file).values
        if stores_mirrors:
            file = Path(scratch.name) / "mirrored.npy"
            mirrors = store_boundaries(bottom(), fitted.paths, size, file, mirror=True).values
        epochs = run_epochs(
            options.epochs,
            train_epoch,
            None if joined else lambda: measure(monitored)[:2],
            lambda: [weight.numpy() for weight in trainable],
            0 if joined else len(validation),
            say,
            title="Fine-tune epoch",
            start_counts=True,
            task=task,
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
            task=task,
        )
        _, accuracy, tuned.test_scores = measure(test)
        if tuned_features:
            if joined:
                both = split_features(fitted)
                parts = {TRAIN: both[: len(train)], VALIDATION: both[len(train) :]}
            else:
                parts = {TRAIN: split_features(train), VALIDATION: split_features(validation)}
            tuned.tuned_features = parts
        boundaries.clear()  # memory maps of files about to be removed
        mirrors = None
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


def _keep_depthwise(top: keras.Model) -> None:
    """The tuned blocks' depthwise convolutions keep their pretrained weights: a step then
    costs a fifth to a quarter less on a CPU (their kernels' gradients are dear there), for
    the same accuracy on clothing-extra (docs/accuracy.md, "eighth")."""
    for layer in top.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            layer.trainable = False


def _synchronized(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A copy of `layer` for the mirrored model: batch normalisation over the global batch."""
    config = layer.get_config()
    if isinstance(layer, keras.layers.BatchNormalization):
        config["synchronized"] = True
    return layer.__class__.from_config(config)


def _joined(first: LabelledPaths, second: LabelledPaths) -> LabelledPaths:
    """The photos of both splits as one, `first`'s first."""
    rows = None
    if first.rows is not None and second.rows is not None:
        rows = np.concatenate([first.rows, second.rows])
    labels = np.concatenate([first.labels, second.labels])
    return LabelledPaths([*first.paths, *second.paths], labels, rows)


@dataclass
class _Rows:
    """The rows of `values` that one split's photos have, indexed like the split itself."""

    values: np.ndarray
    rows: np.ndarray

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        return self.values[self.rows[index]]


def _mixed(
    rng: np.random.Generator,
    alpha: float,
    boundary: np.ndarray,
    targets: np.ndarray,
    photo_weights: np.ndarray,
    labels: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mixup (Zhang et al. 2018) on the top blocks' input: each photo mixed with another of
    the batch, by a share drawn from Beta(alpha, alpha), targets and label weights likewise;
    the label returned is the one with the larger share."""
    share = float(rng.beta(alpha, alpha))
    other = rng.permutation(len(labels))

    def mix(values: np.ndarray) -> np.ndarray:
        return (share * values + (1 - share) * values[other]).astype(values.dtype)

    larger = labels if share >= 0.5 else labels[other]
    return mix(boundary), mix(targets), mix(photo_weights), larger
