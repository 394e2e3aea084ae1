"""The train command's flow: scan, features (cached), head, fine-tuning, novelty, export,
report, and a check of the data (doctor.py).

One module per step; this one only chains them. The folder's lock is taken first, before
anything slow (TensorFlow's import alone takes seconds), so a second train on the same
TF_FILES is refused at once rather than after both have started working.

The scan decides the task (classify/task.py): single-label, or multi-label when
TF_FILES/labels.csv exists or --multi_label says so; every step is handed it. A multi-label
model's thresholds are chosen after the export, on the validation photos scored by the
exported model as guess.sh runs it, and written into tensorguess.json before the test photos
are measured with them (a train stopped in between leaves 0.5 for every label).
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from tensorguess.classify.task import SINGLE, MultiLabel, Task
from tensorguess.data.dataset import LABELS_CSV, TEST, TRAIN, VALIDATION, Scan, scan_data
from tensorguess.errors import TensorguessError
from tensorguess.files import holding_train_lock
from tensorguess.model_files import BOTTLENECK_DIR
from tensorguess.quality.doctor import Checkup
from tensorguess.quality.evaluate import Evaluation
from tensorguess.training.options import TrainingOptions

# The training log names this many misclassified test photos; report.html shows them all.
MISTAKES_SHOWN = 20
# The training log names this many of each of the data check's findings.
FINDINGS_SHOWN = 5


@dataclass
class TrainingSummary:
    """What a training run did, for the final lines and `--json`."""

    labels: list[str]
    counts: dict[str, int]
    features_computed: int
    features_cached: int
    test_accuracy: float | None
    test_count: int
    epochs_run: int
    outputs: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    evaluation: Evaluation | None = None
    checkup: Checkup | None = None
    task: str = SINGLE.name

    def to_json(self) -> dict:
        """The summary as `train --json` prints it."""
        summary = asdict(self)
        summary["checkup"] = self.checkup.to_json() if self.checkup else None
        summary["evaluation"] = self.evaluation.to_json() if self.evaluation else None
        return summary


@holding_train_lock
def train_classifier(tf_files: Path, options: TrainingOptions, say=print) -> TrainingSummary:
    """Train a classifier on `tf_files/data` and write it into `tf_files`."""
    started = time.monotonic()
    tf_files = Path(tf_files)
    compute = None
    if options.ray is not None:  # Ray installed, its address answering: checked before the scan
        from tensorguess.classify.cluster.connection import RayCluster
        from tensorguess.classify.cluster.workers import ClusterFeatures

        cluster = RayCluster(options.ray, "the feature cache keeps what was computed; run again")
        compute = ClusterFeatures(cluster, options.backbone)
    scan = scan_data(
        tf_files / "data",
        options.validation_percentage,
        options.testing_percentage,
        multi_label=options.multi_label,
        labels_csv=tf_files / LABELS_CSV,
    )
    say(scan.mode)
    for message in scan.warnings:
        say(f"warning: {message}")
    counts = {name: len(scan.split(name)) for name in (TRAIN, VALIDATION, TEST)}
    say(
        f"Found {len(scan.images)} images of {len(scan.labels)} labels "
        f"({counts[TRAIN]} train, {counts[VALIDATION]} validation, {counts[TEST]} test)"
    )
    from tensorguess.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()  # after the lock and the scan: the slow part starts here
    try:
        with tempfile.TemporaryDirectory(prefix="tensorguess-train-") as scratch:
            return _train(tf_files, options, scan, say, started, Path(scratch), compute)
    finally:
        if compute is not None:
            compute.cluster.close()


def _train(
    tf_files: Path,
    options: TrainingOptions,
    scan: Scan,
    say,
    started: float,
    scratch: Path,
    compute=None,
) -> TrainingSummary:
    """The steps of a training run, in order, each a function of its own below; `scratch`
    holds what lives only as long as the run (the frozen blocks' output)."""
    from tensorguess.features.backbones import get_backbone
    from tensorguess.features.engines import engine_precision

    backbone = get_backbone(options.backbone, options.image_size)
    if options.fine_tune.enabled:
        from tensorguess.features.boundaries import split_backbone

        split_backbone(backbone, options.fine_tune.blocks)  # refuse now, not after the features
    engines = _Engines.of(options.engine, compute)
    calibration = _calibration(scan) if engines.int8 else None
    cache_root = options.bottleneck_dir or tf_files / BOTTLENECK_DIR
    stored, finish = _frozen_blocks(backbone, scan, options, engines, compute, scratch)
    features = _features(
        backbone, scan, cache_root, engines, finish or compute, calibration, say
    )
    task: Task = MultiLabel() if scan.multi_label else SINGLE
    data = _split_features(tf_files, scan, features, task)
    if options.distortions.enabled:
        _distorted_views(backbone, data, cache_root, options, engines, compute, calibration, say)
    head = _train_head(data, scan.labels, options, say, task)
    if options.fine_tune.enabled:
        head = _fine_tune(backbone, head, data, options, engines, say, stored)
    novelty = _fit_novelty(data, head, say)
    precision = engine_precision(engines.tuning)
    exported = _export(tf_files, backbone, head, novelty, scan.labels, precision, data, options)
    outputs = [exported.graph, exported.labels, exported.saved_model, exported.metadata]
    if engines.int8:
        from tensorguess.features.engines.int8 import INT8_FOLDER

        check = _quantize(tf_files, exported.graph, precision, calibration, data, task)
        say(check.describe())
        outputs += [tf_files / INT8_FOLDER] if check.kept else []
    classifier, evaluation = _evaluate(
        tf_files, data, None if engines.int8 else options.engine, say
    )
    checkup = _check_data(scan, features, say, task.multi_label)
    if options.summaries_dir:
        from tensorguess.quality.report import write_summaries

        write_summaries(options.summaries_dir, head.history, task.metric_key)
    if options.report:
        outputs += _report(
            tf_files, backbone, data, classifier, evaluation, head, checkup, options, engines,
            started, say,
        )  # fmt: skip
    skipped = [(str(path), reason) for path, reason in scan.skipped]
    skipped += [
        (str(scan.images[i].path), reason) for i, reason in sorted(features.problems.items())
    ]
    return TrainingSummary(
        labels=scan.labels,
        counts={name: len(split) for name, split in data.splits.items()},
        features_computed=features.computed,
        features_cached=features.cached,
        test_accuracy=evaluation.accuracy,
        test_count=evaluation.count,
        epochs_run=head.epochs_run,
        outputs=[str(path) for path in outputs],
        skipped=skipped,
        warnings=scan.warnings,
        seconds=time.monotonic() - started,
        evaluation=evaluation,
        checkup=checkup,
        task=task.name,
    )


@dataclass(frozen=True)
class _Engines:
    """What computes the features (`features`, as asked for and resolved) and what runs the
    steps that change the backbone's weights (`tuning`: fine-tuning, the tuned features,
    the export's precision). int8: the head learns from int8 features (their scales measured
    on training photos) and the exported classifier is quantised and checked after the
    export (quantize.py); fine-tuning and the float fallback use OpenVINO's float precision.
    """

    features: str
    tuning: str
    int8: bool

    @classmethod
    def of(cls, asked: str | None, compute) -> _Engines:
        from tensorguess.features.engines import INT8_ENGINE, resolved_engine

        features = resolved_engine(asked)
        int8 = features == INT8_ENGINE
        if int8 and compute is not None:
            raise TensorguessError(
                "--engine openvino-int8 computes its features on this machine: drop --ray"
            )
        return cls(features, "openvino" if int8 else features, int8)


@dataclass
class _TrainingData:
    """The features and true labels of each split (`splits`), their photos in the same
    order and those photos' rows in the scan (`rows`), the labels in output order, and the
    task."""

    splits: dict
    photos: dict
    rows: dict
    labels: list[str]
    task: Task = SINGLE

    def truths(self, name: str) -> list[tuple]:
        """(photo, its true label, or labels for multi-label) of split `name`, for the
        evaluation."""
        return [
            (image.path, image.labels if self.task.multi_label else image.label)
            for image in self.photos[name]
        ]


def _calibration(scan: Scan):
    """The training photos an int8 model's scales are measured on."""
    from tensorguess.features.engines.int8 import calibration_photos

    training = list(scan.split(TRAIN))
    return calibration_photos(
        [image.path for image in training], [image.digest for image in training]
    )


def _frozen_blocks(
    backbone, scan: Scan, options: TrainingOptions, engines: _Engines, compute, scratch: Path
):
    """(stored, finish): the output of the blocks that fine-tuning leaves frozen, for every
    photo, and the `compute` that finishes the features from it with the pretrained top
    blocks (boundaries.py): one pass of the bottom of the backbone serves both. (None, None)
    without fine-tuning, with photos distorted afresh each epoch, or with features computed
    elsewhere or in int8."""
    tune = options.fine_tune
    if not tune.enabled or options.distortions.alters_pixels or compute or engines.int8:
        return None, None
    from tensorguess.features.boundaries import (
        FeaturesFromBoundaries,
        bottom_runner,
        store_boundaries,
        top_runner,
    )

    paths = [image.path for image in scan.images]
    stored = store_boundaries(
        bottom_runner(backbone, tune.blocks, engines.tuning),
        paths,
        backbone.image_size,
        scratch / "boundaries.npy",
        label="Frozen blocks",
    )
    run_top = top_runner(backbone, tune.blocks, engines.tuning)
    return stored, FeaturesFromBoundaries(stored, paths, run_top)


def _features(backbone, scan: Scan, cache_root: Path, engines, compute, calibration, say):
    """Every photo's features, from the cache where they are, computed (by `compute` when
    given) where not."""
    from tensorguess.features.bottlenecks import cached_features

    features = cached_features(
        backbone,
        [image.path for image in scan.images],
        cache_root,
        digests=[image.digest for image in scan.images],
        engine=engines.features,
        compute=compute,
        calibration=calibration,
    )
    say(f"Features: {features.describe()} ({backbone.name})")
    return features


def _split_features(tf_files: Path, scan: Scan, features, task: Task) -> _TrainingData:
    """The readable photos' features by split; refuses a label left without training photos."""
    from tensorguess.training.head import SplitData

    splits, photos, split_rows = {}, {}, {}
    for name in (TRAIN, VALIDATION, TEST):
        rows = [i for i, image in enumerate(scan.images) if image.split == name and features.ok[i]]
        split_rows[name] = np.array(rows, dtype=np.int64)
        photos[name] = [scan.images[i] for i in rows]
        truth = task.truth([scan.images[i].labels for i in rows], scan.labels)
        splits[name] = SplitData(features.vectors[rows], truth)
    trained = task.indicators(splits[TRAIN].labels, len(scan.labels)).any(axis=0)
    missing = [label for label, present in zip(scan.labels, trained, strict=True) if not present]
    if missing:
        raise TensorguessError(
            f"no training images left for {', '.join(missing)}: add photos to "
            f"{tf_files / 'data'}/<label>/ or lower the validation and test percentages"
        )
    return _TrainingData(splits, photos, split_rows, scan.labels, task)


def _distorted_views(
    backbone, data: _TrainingData, cache_root, options, engines, compute, calibration, say
) -> None:
    """The training photos' distorted views' features (cached like the plain ones), for the
    head to learn from."""
    from tensorguess.training.augment import describe_views, distorted_features

    views = distorted_features(
        backbone,
        [image.path for image in data.photos[TRAIN]],
        cache_root,
        options.distortions,
        digests=[image.digest for image in data.photos[TRAIN]],
        engine=engines.features,
        compute=compute,
        calibration=calibration,
    )
    data.splits[TRAIN].views = views.vectors
    say(
        f"Distorted views: {views.computed} computed, {views.cached} from cache "
        f"({describe_views(options.distortions)})"
    )


def _train_head(
    data: _TrainingData, labels: list[str], options: TrainingOptions, say, task: Task
):
    """The head, trained on the cached features (head.py)."""
    from tensorguess.training.head import train_head

    splits = data.splits
    return train_head(
        splits[TRAIN],
        splits[VALIDATION],
        splits[TEST],
        len(labels),
        options.head,
        options.seed,
        say,
        task,
    )


def _fine_tune(
    backbone, head, data: _TrainingData, options: TrainingOptions, engines: _Engines, say, stored
):
    """The backbone's top blocks and the head, trained together on the photos (fine_tune.py),
    from the `stored` boundaries where there are some; the head carries the tuned features
    of the training and validation photos, which the novelty score is fitted on. It learns
    from the validation photos too (`on_validation`) unless something later is chosen or
    checked on them: a multi-label model's thresholds, an int8 model's check."""
    from tensorguess.training.fine_tune import LabelledPaths, fine_tune

    tuning = options.fine_tune
    if tuning.on_validation and (data.task.multi_label or engines.int8):
        if engines.int8 and not data.task.multi_label:
            say(
                "Fine-tuning keeps the validation photos apart (--engine openvino-int8): the "
                "int8 model is checked on them"
            )
        tuning = replace(tuning, on_validation=False)

    labelled = [
        LabelledPaths(
            [image.path for image in data.photos[name]], data.splits[name].labels, data.rows[name]
        )
        for name in (TRAIN, VALIDATION, TEST)
    ]
    return fine_tune(
        backbone,
        head,
        options.head,
        *labelled,
        options.distortions,
        tuning,
        options.seed,
        say,
        engine=engines.tuning,
        stored=stored,
        tuned_features=True,
    )


def _export(
    tf_files: Path,
    backbone,
    head,
    novelty,
    labels: list[str],
    precision: str,
    data: _TrainingData,
    options: TrainingOptions,
):
    """The model files written into TF_FILES, all or nothing (model_writer.py)."""
    from tensorguess.training.model_writer import export_model

    details = {
        "preset": options.preset,
        "images": {name: len(split) for name, split in data.splits.items()},
        "validation_percentage": options.validation_percentage,
        "testing_percentage": options.testing_percentage,
    }
    if options.fine_tune.enabled:
        details["fine_tuned_blocks"] = options.fine_tune.blocks
    return export_model(
        tf_files,
        backbone,
        options.backbone,
        head,
        novelty,
        labels,
        precision,
        details,
        options.flip_average,
    )


def _evaluate(tf_files: Path, data: _TrainingData, engine: str | None, say):
    """The test photos through the exported model, as guess.sh runs it (its engine and
    precision, the mirror-image average): the accuracy printed is the one a user gets.
    Loading it also converts it for OpenVINO while TensorFlow is loaded anyway, so the next
    guess.sh or guessDir.sh starts in about a second. A multi-label model's thresholds are
    chosen first, on the validation photos scored the same way."""
    from tensorguess.classify.loading import load_classifier
    from tensorguess.quality.evaluate import evaluate_images, summary_lines
    from tensorguess.training.model_writer import update_metadata

    classifier = load_classifier(tf_files, engine=engine)
    if data.task.multi_label:
        classifier.task = _choose_thresholds(tf_files, classifier, data, say)
    evaluation = evaluate_images(classifier, data.truths(TEST))
    update_metadata(tf_files, **evaluation.recorded())
    for line in summary_lines(evaluation, "Final test", MISTAKES_SHOWN):
        say(line)
    return classifier, evaluation


def _choose_thresholds(tf_files: Path, classifier, data: _TrainingData, say) -> MultiLabel:
    """Each label's threshold, for the best F1 on the validation photos (task.py), written
    into tensorguess.json."""
    from tensorguess.quality.evaluate import evaluate_images
    from tensorguess.training.model_writer import update_metadata

    validation = evaluate_images(classifier, data.truths(VALIDATION))
    fitted = MultiLabel().fitted(validation.scores, validation.truth)
    update_metadata(tf_files, **fitted.metadata(data.labels))
    shown = ", ".join(
        f"{label} {threshold:.2f}"
        for label, threshold in zip(data.labels, fitted.thresholds, strict=True)
    )
    say(f"Thresholds, for the best F1 on {validation.count} validation photos: {shown}")
    return fitted


def _report(
    tf_files: Path,
    backbone,
    data: _TrainingData,
    classifier,
    evaluation,
    head,
    checkup,
    options: TrainingOptions,
    engines: _Engines,
    started: float,
    say,
) -> list[Path]:
    """report.html (the misclassified photos with heat maps) and its figures (report.py);
    the paths written."""
    from tensorguess.features.engines import engine_precision
    from tensorguess.quality.explain import report_heat_maps
    from tensorguess.quality.report import (
        REPORT_FILE,
        THUMBNAIL_SIZE,
        miss_heat_maps,
        training_facts,
        write_report,
    )

    features_in = f"{engines.features} ({engine_precision(engines.features)})"
    settings = [*options.describe(data.task.activation), ("engine", features_in)]
    facts = training_facts(
        backbone, data.splits, evaluation, settings, time.monotonic() - started
    )
    title = f"tensorguess: {tf_files.resolve().name}"
    heat = report_heat_maps(classifier, evaluation.mistakes, THUMBNAIL_SIZE, say)
    return write_report(
        tf_files / REPORT_FILE,
        title,
        facts,
        evaluation,
        head.history,
        checkup=checkup,
        heat=heat,
        miss_heat=miss_heat_maps(classifier, evaluation.misses, say),
        metric=(data.task.metric_key, data.task.metric_name),
    )


def _quantize(
    tf_files: Path, graph: Path, precision: str, calibration, data: _TrainingData, task: Task
):
    """The exported graph quantised to int8 and checked on the validation photos (quantize.py)."""
    from tensorguess.classify.layouts import detect_layout
    from tensorguess.classify.model_reader import read_graph, read_model_bytes
    from tensorguess.training.quantize import quantize_classifier

    graph_bytes = read_model_bytes(graph)
    graph_def = read_graph(graph, graph_bytes)
    validation = [image.path for image in data.photos[VALIDATION]]
    return quantize_classifier(
        tf_files,
        graph_def,
        detect_layout(graph_def),
        hashlib.sha256(graph_bytes).hexdigest(),
        precision,
        calibration,
        list(zip(validation, data.splits[VALIDATION].labels, strict=True)),
        task,
    )


def _fit_novelty(data: _TrainingData, head, say):
    """The novelty score of the features the exported model computes, and its threshold:
    after fine-tuning, the tuned features (from its stored boundaries), else the cached ones."""
    from tensorguess.features.novelty import EXCEEDING, fit_novelty

    if head.tuned_features:
        train, validation = (head.tuned_features[name] for name in (TRAIN, VALIDATION))
    else:
        train, validation = (data.splits[name].features for name in (TRAIN, VALIDATION))
    novelty = fit_novelty(train, validation)
    say(
        f"Novelty threshold = {novelty.threshold:.4f} (exceeded by {EXCEEDING:.0%} of "
        f"{novelty.calibrated_on} {novelty.calibration}); past it, guess.sh says a photo is "
        "unlike every training photo and guessDir.sh --unknown names it unknown-*"
    )
    return novelty


def _check_data(scan: Scan, features, say, multi_label: bool) -> Checkup:
    """doctor.py's check of the photos, on their cached features, summarised in the log."""
    from tensorguess.quality.doctor import check_photos

    rows = np.flatnonzero(features.ok)
    images = [scan.images[row] for row in rows]
    checkup = check_photos(images, scan.labels, features.vectors[rows], multi_label=multi_label)
    say("Data check (tensorguess doctor TF_FILES lists everything):")
    for line in checkup.summary_lines(FINDINGS_SHOWN):
        say(f"  {line}")
    return checkup
