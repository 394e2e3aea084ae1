"""The train command's flow: scan, features (cached), head, fine-tuning, novelty, export,
report, and a check of the data (doctor.py).

One module per step; this one only chains them. The folder's lock is taken first, before
anything slow (TensorFlow's import alone takes seconds), so a second train on the same
TF_FILES is refused at once rather than after both have started working.
"""

from __future__ import annotations

import gc
import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tensorguess.data.dataset import TEST, TRAIN, VALIDATION, Scan, scan_data
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

    def to_json(self) -> dict:
        """The summary as `train --json` prints it."""
        summary = asdict(self)
        summary["checkup"] = self.checkup.to_json() if self.checkup else None
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
    scan = scan_data(tf_files / "data", options.validation_percentage, options.testing_percentage)
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
        return _train(tf_files, options, scan, say, started, compute)
    finally:
        if compute is not None:
            compute.cluster.close()


def _train(
    tf_files: Path, options: TrainingOptions, scan: Scan, say, started: float, compute=None
) -> TrainingSummary:
    """The steps of a training run, in order, each a function of its own below."""
    from tensorguess.features.backbones import get_backbone
    from tensorguess.features.engines import engine_precision

    backbone = get_backbone(options.backbone, options.image_size)
    if options.fine_tune.enabled:
        from tensorguess.training.fine_tune import split_backbone

        split_backbone(backbone, options.fine_tune.blocks)  # refuse now, not after the features
    engines = _Engines.of(options.engine, compute)
    calibration = _calibration(scan) if engines.int8 else None
    cache_root = options.bottleneck_dir or tf_files / BOTTLENECK_DIR
    features = _features(backbone, scan, cache_root, engines, compute, calibration, say)
    data = _split_features(tf_files, scan, features)
    if options.distortions.enabled:
        _distorted_views(backbone, data, cache_root, options, engines, compute, calibration, say)
    head = _train_head(data, scan.labels, options, say)
    if options.fine_tune.enabled:
        head = _fine_tune(backbone, head, data, options, engines.tuning, say)
    novelty = _fit_novelty(
        backbone, data.splits, data.photos, options.fine_tune.enabled, engines.tuning, say
    )
    precision = engine_precision(engines.tuning)
    exported = _export(tf_files, backbone, head, novelty, scan.labels, precision, data, options)
    outputs = [exported.graph, exported.labels, exported.saved_model, exported.metadata]
    if engines.int8:
        from tensorguess.features.engines.int8 import INT8_FOLDER

        check = _quantize(
            tf_files, exported.graph, precision, calibration, data.photos, data.label_index
        )
        say(check.describe())
        outputs += [tf_files / INT8_FOLDER] if check.kept else []
    classifier, evaluation = _evaluate(
        tf_files, data, None if engines.int8 else options.engine, say
    )
    checkup = _check_data(scan, features, say)
    if options.summaries_dir:
        from tensorguess.quality.report import write_summaries

        write_summaries(options.summaries_dir, head.history)
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
    """The features of each split (`splits`), their photos in the same order, and each
    label's index in the model's output."""

    splits: dict
    photos: dict
    label_index: dict[str, int]


def _calibration(scan: Scan):
    """The training photos an int8 model's scales are measured on."""
    from tensorguess.features.engines.int8 import calibration_photos

    training = list(scan.split(TRAIN))
    return calibration_photos(
        [image.path for image in training], [image.digest for image in training]
    )


def _features(backbone, scan: Scan, cache_root: Path, engines, compute, calibration, say):
    """Every photo's features, from the cache where they are, computed where not."""
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


def _split_features(tf_files: Path, scan: Scan, features) -> _TrainingData:
    """The readable photos' features by split; refuses a label left without training photos."""
    from tensorguess.training.head import SplitData

    label_index = {label: i for i, label in enumerate(scan.labels)}
    splits, photos = {}, {}
    for name in (TRAIN, VALIDATION, TEST):
        rows = [i for i, image in enumerate(scan.images) if image.split == name and features.ok[i]]
        photos[name] = [scan.images[i] for i in rows]
        splits[name] = SplitData(
            features.vectors[rows],
            np.array([label_index[scan.images[i].label] for i in rows], dtype=np.int64),
        )
    missing = [
        label for label in scan.labels if label_index[label] not in set(splits[TRAIN].labels)
    ]
    if missing:
        raise TensorguessError(
            f"no training images left for {', '.join(missing)}: add photos to "
            f"{tf_files / 'data'}/<label>/ or lower the validation and test percentages"
        )
    return _TrainingData(splits, photos, label_index)


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


def _train_head(data: _TrainingData, labels: list[str], options: TrainingOptions, say):
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
    )


def _fine_tune(backbone, head, data: _TrainingData, options: TrainingOptions, engine: str, say):
    """The backbone's top blocks and the head, trained together on the photos (fine_tune.py)."""
    from tensorguess.training.fine_tune import LabelledPaths, fine_tune

    labelled = [
        LabelledPaths([image.path for image in data.photos[name]], data.splits[name].labels)
        for name in (TRAIN, VALIDATION, TEST)
    ]
    return fine_tune(
        backbone,
        head,
        options.head,
        *labelled,
        options.distortions,
        options.fine_tune,
        options.seed,
        say,
        engine=engine,
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
    guess.sh or guessDir.sh starts in about a second."""
    from tensorguess.classify.loading import load_classifier
    from tensorguess.quality.evaluate import evaluate_images, summary_lines
    from tensorguess.training.model_writer import record_test_accuracy

    classifier = load_classifier(tf_files, engine=engine)
    test = [(image.path, image.label) for image in data.photos[TEST]]
    evaluation = evaluate_images(classifier, test)
    record_test_accuracy(tf_files, evaluation.accuracy, evaluation.count)
    for line in summary_lines(evaluation, "Final test accuracy", MISTAKES_SHOWN):
        say(line)
    return classifier, evaluation


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
        training_facts,
        write_report,
    )

    features_in = f"{engines.features} ({engine_precision(engines.features)})"
    settings = [*options.describe(), ("engine", features_in)]
    facts = training_facts(
        backbone, data.splits, evaluation, settings, time.monotonic() - started
    )
    title = f"tensorguess: {tf_files.resolve().name}"
    heat = report_heat_maps(classifier, evaluation.mistakes, THUMBNAIL_SIZE, say)
    return write_report(
        tf_files / REPORT_FILE, title, facts, evaluation, head.history, checkup=checkup, heat=heat
    )


def _quantize(
    tf_files: Path, graph: Path, precision: str, calibration, photos: dict, label_index: dict
):
    """The exported graph quantised to int8 and checked on the validation photos (quantize.py)."""
    from tensorguess.classify.layouts import detect_layout
    from tensorguess.classify.model_reader import read_graph, read_model_bytes
    from tensorguess.training.quantize import quantize_classifier

    data = read_model_bytes(graph)
    graph_def = read_graph(graph, data)
    return quantize_classifier(
        tf_files,
        graph_def,
        detect_layout(graph_def),
        hashlib.sha256(data).hexdigest(),
        precision,
        calibration,
        [(image.path, label_index[image.label]) for image in photos[VALIDATION]],
    )


def _fit_novelty(backbone, splits: dict, photos: dict, fine_tuned: bool, engine: str, say):
    """The novelty score of the features the exported model computes, and its threshold."""
    from tensorguess.features.novelty import EXCEEDING, fit_novelty

    if fine_tuned:  # the cached features describe the backbone before fine-tuning
        from tensorguess.features.bottlenecks import tuned_features

        train, validation = (
            tuned_features(
                backbone,
                [image.path for image in photos[name]],
                engine,
                f"Tuned features ({name})",
            )
            for name in (TRAIN, VALIDATION)
        )
        # Collect the runner built for them now: collected later, inside the export, its
        # finalisers could swallow a Ctrl-C ("Exception ignored"), and train would carry on.
        gc.collect()
    else:
        train, validation = splits[TRAIN].features, splits[VALIDATION].features
    novelty = fit_novelty(train, validation)
    say(
        f"Novelty threshold = {novelty.threshold:.4f} (exceeded by {EXCEEDING:.0%} of "
        f"{novelty.calibrated_on} {novelty.calibration}); past it, guess.sh says a photo is "
        "unlike every training photo and guessDir.sh --unknown names it unknown-*"
    )
    return novelty


def _check_data(scan: Scan, features, say) -> Checkup:
    """doctor.py's check of the photos, on their cached features, summarised in the log."""
    from tensorguess.quality.doctor import check_photos

    rows = np.flatnonzero(features.ok)
    checkup = check_photos([scan.images[row] for row in rows], scan.labels, features.vectors[rows])
    say("Data check (tensorguess doctor TF_FILES lists everything):")
    for line in checkup.summary_lines(FINDINGS_SHOWN):
        say(f"  {line}")
    return checkup
