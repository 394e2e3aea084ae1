"""The train command's flow: scan, features (cached), head, export; one module per step."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tensorguess.dataset import TEST, TRAIN, VALIDATION, scan_data
from tensorguess.errors import TensorguessError

BOTTLENECK_DIR = "bottlenecks"


@dataclass(frozen=True)
class TrainingOptions:
    """Everything `train` can be told; the defaults are retrain.py's where it had one."""

    backbone: str = "efficientnet_lite0"
    image_size: int | None = None
    validation_percentage: float = 10
    testing_percentage: float = 10
    bottleneck_dir: Path | None = None
    hidden_units: int = 0
    dropout: float = 0.0
    learning_rate: float = 0.001
    epochs: int = 200
    batch_size: int = 64
    seed: int = 0


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


def train_classifier(
    tf_files: Path, options: TrainingOptions, say: Callable[[str], None] = print
) -> TrainingSummary:
    """Train a classifier on `tf_files/data` and write it into `tf_files`."""
    from tensorguess.backbones import get_backbone
    from tensorguess.bottlenecks import cached_features
    from tensorguess.export import export_model
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
    cache_root = options.bottleneck_dir or tf_files / BOTTLENECK_DIR
    features = cached_features(backbone, [image.path for image in scan.images], cache_root)
    say(f"Features: {features.computed} computed, {features.cached} from cache ({backbone.name})")
    skipped = [(str(path), reason) for path, reason in scan.skipped]
    skipped += [
        (str(scan.images[i].path), reason) for i, reason in sorted(features.problems.items())
    ]

    label_index = {label: i for i, label in enumerate(scan.labels)}
    splits = {}
    for name in (TRAIN, VALIDATION, TEST):
        rows = [i for i, image in enumerate(scan.images) if image.split == name and features.ok[i]]
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
    head_options = HeadOptions(
        hidden_units=options.hidden_units,
        dropout=options.dropout,
        learning_rate=options.learning_rate,
        epochs=options.epochs,
        batch_size=options.batch_size,
        seed=options.seed,
    )
    head = train_head(
        splits[TRAIN], splits[VALIDATION], splits[TEST], len(scan.labels), head_options, say
    )
    details = {
        "images": {name: len(split) for name, split in splits.items()},
        "validation_percentage": options.validation_percentage,
        "testing_percentage": options.testing_percentage,
    }
    exported = export_model(tf_files, backbone, options.backbone, head, scan.labels, details)
    return TrainingSummary(
        labels=scan.labels,
        counts={name: len(split) for name, split in splits.items()},
        features_computed=features.computed,
        features_cached=features.cached,
        test_accuracy=head.test_accuracy,
        test_count=head.test_count,
        epochs_run=head.epochs_run,
        outputs=[
            str(exported.graph),
            str(exported.labels),
            str(exported.saved_model),
            str(exported.metadata),
        ],
        skipped=skipped,
        warnings=scan.warnings,
        seconds=time.monotonic() - started,
    )
