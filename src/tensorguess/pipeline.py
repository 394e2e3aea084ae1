"""The train command's flow: scan, features (cached), head, export; one module per step."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tensorguess.dataset import TEST, TRAIN, VALIDATION, scan_data
from tensorguess.errors import TensorguessError
from tensorguess.evaluate import Evaluation
from tensorguess.files import holding_train_lock

BOTTLENECK_DIR = "bottlenecks"
# The training log names this many misclassified test photos; report.html shows them all.
MISTAKES_SHOWN = 20


@dataclass(frozen=True)
class TrainingOptions:
    """Everything `train` can be told; the defaults are the `balanced` preset (presets.py)."""

    backbone: str = "efficientnet_lite0"
    image_size: int | None = None
    validation_percentage: float = 10
    testing_percentage: float = 10
    bottleneck_dir: Path | None = None
    hidden_units: int = 0
    dropout: float = 0.0
    label_smoothing: float = 0.1
    class_weights: str = "balanced"
    learning_rate: float = 0.005
    learning_rate_schedule: str = "constant"
    epochs: int = 200
    batch_size: int = 64
    seed: int = 0
    distorted_views: int = 4
    flip_left_right: bool = False
    random_crop: float = 0
    random_scale: float = 0
    random_brightness: float = 0
    fine_tune: bool = True
    fine_tune_blocks: int = 4
    fine_tune_epochs: int = 3
    fine_tune_learning_rate: float = 3e-4
    summaries_dir: Path | None = None
    report: bool = True
    engine: str | None = None


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


@holding_train_lock
def train_classifier(
    tf_files: Path, options: TrainingOptions, say: Callable[[str], None] = print
) -> TrainingSummary:
    """Train a classifier on `tf_files/data` and write it into `tf_files`."""
    from tensorguess.augment import Distortions, distorted_features
    from tensorguess.backbones import get_backbone
    from tensorguess.bottlenecks import cached_features
    from tensorguess.evaluate import evaluate_scores, summary_lines
    from tensorguess.export import export_model
    from tensorguess.inference import resolved_engine
    from tensorguess.predict import load_classifier
    from tensorguess.train import HeadOptions, SplitData, train_head

    started = time.monotonic()
    tf_files = Path(tf_files)
    scan = scan_data(tf_files / "data", options.validation_percentage, options.testing_percentage)
    for message in scan.warnings:
        say(f"warning: {message}")
    counts = {name: len(scan.split(name)) for name in (TRAIN, VALIDATION, TEST)}
    say(
        f"Found {len(scan.images)} images of {len(scan.labels)} labels "
        f"({counts[TRAIN]} train, {counts[VALIDATION]} validation, {counts[TEST]} test)"
    )
    backbone = get_backbone(options.backbone, options.image_size)
    if options.fine_tune:
        from tensorguess.fine_tune import split_backbone

        split_backbone(backbone, options.fine_tune_blocks)  # refuse now, not after the features
    cache_root = options.bottleneck_dir or tf_files / BOTTLENECK_DIR
    features = cached_features(
        backbone,
        [image.path for image in scan.images],
        cache_root,
        digests=[image.digest for image in scan.images],
        engine=options.engine,
    )
    say(f"Features: {features.computed} computed, {features.cached} from cache ({backbone.name})")
    skipped = [(str(path), reason) for path, reason in scan.skipped]
    skipped += [
        (str(scan.images[i].path), reason) for i, reason in sorted(features.problems.items())
    ]

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
    distortions = Distortions(
        options.distorted_views,
        options.flip_left_right,
        options.random_crop,
        options.random_scale,
        options.random_brightness,
    )
    if distortions.enabled:
        views = distorted_features(
            backbone,
            [image.path for image in photos[TRAIN]],
            cache_root,
            distortions,
            digests=[image.digest for image in photos[TRAIN]],
        )
        splits[TRAIN].views = views.vectors
        say(
            f"Distorted views: {views.computed} computed, {views.cached} from cache "
            f"({distortions.describe()})"
        )
    head_options = HeadOptions(
        hidden_units=options.hidden_units,
        dropout=options.dropout,
        label_smoothing=options.label_smoothing,
        balance_labels=options.class_weights == "balanced",
        learning_rate=options.learning_rate,
        schedule=options.learning_rate_schedule,
        epochs=options.epochs,
        batch_size=options.batch_size,
        seed=options.seed,
    )
    head = train_head(
        splits[TRAIN], splits[VALIDATION], splits[TEST], len(scan.labels), head_options, say
    )
    if options.fine_tune:
        from tensorguess.fine_tune import FineTuneOptions, LabelledPaths, fine_tune

        tuning = FineTuneOptions(
            blocks=options.fine_tune_blocks,
            epochs=options.fine_tune_epochs,
            learning_rate=options.fine_tune_learning_rate,
            seed=options.seed,
        )
        labelled = [
            LabelledPaths([image.path for image in photos[name]], splits[name].labels)
            for name in (TRAIN, VALIDATION, TEST)
        ]
        head = fine_tune(backbone, head, head_options, *labelled, distortions, tuning, say)
    details = {
        "images": {name: len(split) for name, split in splits.items()},
        "validation_percentage": options.validation_percentage,
        "testing_percentage": options.testing_percentage,
    }
    if options.fine_tune:
        details["fine_tuned_blocks"] = options.fine_tune_blocks
    exported = export_model(tf_files, backbone, options.backbone, head, scan.labels, details)
    if resolved_engine(options.engine).startswith("openvino"):
        # Convert the new graph for OpenVINO now, while TensorFlow is loaded anyway: the
        # next guess.sh or guessDir.sh then starts in about a second.
        load_classifier(tf_files, engine=options.engine)
    evaluation = evaluate_scores(
        scan.labels, [(image.path, image.label) for image in photos[TEST]], head.test_scores
    )
    for line in summary_lines(evaluation, "Final test accuracy", MISTAKES_SHOWN):
        say(line)
    outputs = [exported.graph, exported.labels, exported.saved_model, exported.metadata]
    if options.summaries_dir:
        from tensorguess.report import write_summaries

        write_summaries(options.summaries_dir, head.history)
    if options.report:
        from tensorguess.report import REPORT_FILE, training_facts, write_report

        settings = asdict(options)
        facts = training_facts(backbone, splits, evaluation, settings, time.monotonic() - started)
        title = f"tensorguess: {tf_files.resolve().name}"
        outputs += write_report(tf_files / REPORT_FILE, title, facts, evaluation, head.history)
    return TrainingSummary(
        labels=scan.labels,
        counts={name: len(split) for name, split in splits.items()},
        features_computed=features.computed,
        features_cached=features.cached,
        test_accuracy=head.test_accuracy,
        test_count=head.test_count,
        epochs_run=head.epochs_run,
        outputs=[str(path) for path in outputs],
        skipped=skipped,
        warnings=scan.warnings,
        seconds=time.monotonic() - started,
        evaluation=evaluation,
    )
