"""Know your data: photos whose label looks wrong, near-duplicates, outliers and label counts.

`tensorguess doctor TF_FILES` (and the end of `train`) only reads: nothing a user gave us is
moved, renamed or deleted; it lists, and the user decides. Everything comes from the cached
features of the photos in data/ (computed first where missing), so a check of thousands of
photos takes seconds. The statistics are photo_statistics.py's; this module turns them into
findings about photos and finds the features for them.

- Label issues: photos whose given label is likely wrong (out-of-fold probabilities under a
  model of label noise: photo_statistics.py), the most likely wrong first, each with the
  label it more likely has.
- Multi-label photos (TF_FILES/labels.csv, one photo in several label folders with
  --multi_label, or a model trained so) are not held to one label: each label is judged on
  its own (one against the rest, out of fold), and doctor lists the labels a photo likely
  has but is not given (missing) and those it is given but likely lacks (extra).
- Near-duplicates: byte-identical ones included and marked; a pair that straddles train and
  validation or test makes the test figures flatter the model.
- Outliers: photos far from every label: out-of-fold novelty scores (a photo is scored
  against a subspace fitted without it, which a far photo would otherwise bend towards
  itself) past Tukey's far-out fence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tensorguess.classify.model_reader import read_metadata
from tensorguess.classify.task import MULTI_LABEL
from tensorguess.data.dataset import (
    LABELS_CSV,
    TEST,
    TESTING_PERCENTAGE,
    TRAIN,
    VALIDATION,
    VALIDATION_PERCENTAGE,
    LabelledImage,
    scan_data,
)
from tensorguess.features.backbones import DEFAULT_BACKBONE
from tensorguess.features.novelty import one_blas_thread, out_of_fold_scores
from tensorguess.files import printable
from tensorguess.model_files import BOTTLENECK_DIR
from tensorguess.quality.photo_statistics import (
    LISTED,
    NEAR_DUPLICATE,
    label_noise,
    missing_and_extra_labels,
    near_duplicate_pairs,
    outlier_rows,
)

# A far more numerous label than another (by this factor) is called out.
IMBALANCE = 3.0


@dataclass(frozen=True)
class LabelIssue:
    """A photo whose given label looks wrong: the label it likely has, and how likely that is.

    `confidence` is the probability that `suggested` is its true label, `label_score` that
    `label` is, `wrong` that `label` is not (each given the photo and its label).
    """

    path: str
    label: str
    suggested: str
    confidence: float
    label_score: float
    wrong: float


@dataclass(frozen=True)
class LabelChange:
    """A label a multi-label photo likely has but is not given (missing), or is given but
    likely lacks (extra).

    `labels` are the photo's given labels; `probability` that it has `label`, `wrong` that
    the label's absence (missing) or presence (extra) is wrong (each given the photo and its
    labels).
    """

    path: str
    labels: tuple[str, ...]
    label: str
    probability: float
    wrong: float


@dataclass(frozen=True)
class NearDuplicate:
    """Two photos whose features are nearly the same: labels, splits, how alike they are."""

    paths: tuple[str, str]
    labels: tuple[str, str]
    splits: tuple[str, str]
    similarity: float
    identical: bool

    @property
    def across_labels(self) -> bool:
        """The two carry different labels: at least one of them is probably wrong."""
        return self.labels[0] != self.labels[1]

    @property
    def straddles(self) -> bool:
        """One is trained on and the other tested or validated on."""
        return TRAIN in self.splits and set(self.splits) & {VALIDATION, TEST} != set()

    def to_json(self) -> dict:
        """The pair as `doctor --json` prints it."""
        return {
            "paths": list(self.paths),
            "labels": list(self.labels),
            "splits": list(self.splits),
            "similarity": self.similarity,
            "identical": self.identical,
            "across_labels": self.across_labels,
            "straddles_train_and_test": self.straddles,
        }


@dataclass(frozen=True)
class Outlier:
    """A photo far from every label, with its out-of-fold novelty score."""

    path: str
    label: str
    novelty: float


@dataclass
class Checkup:
    """What `check_photos` found, most worth a look first in each list."""

    labels: list[str]
    counts: dict[str, int]
    label_issues: list[LabelIssue] = field(default_factory=list)
    near_duplicates: list[NearDuplicate] = field(default_factory=list)
    outliers: list[Outlier] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)  # path -> SHA-256 of each photo
    multi_label: bool = False
    missing_labels: list[LabelChange] = field(default_factory=list)
    extra_labels: list[LabelChange] = field(default_factory=list)

    @property
    def imbalance(self) -> float:
        """How many times more photos the largest label has than the smallest."""
        counts = list(self.counts.values())
        return max(counts) / max(min(counts), 1) if counts else 1.0

    def to_json(self) -> dict:
        """The checkup as `doctor --json` prints it."""
        return {
            "label_issues": [asdict(issue) for issue in self.label_issues],
            "near_duplicates": [pair.to_json() for pair in self.near_duplicates],
            "outliers": [asdict(outlier) for outlier in self.outliers],
            "label_counts": self.counts,
            "imbalance": self.imbalance,
            "skipped": [{"path": path, "reason": reason} for path, reason in self.skipped],
            "multi_label": self.multi_label,
            "missing_labels": [asdict(change) for change in self.missing_labels],
            "extra_labels": [asdict(change) for change in self.extra_labels],
        }

    def summary_lines(self, most: int | None = None) -> list[str]:
        """The findings in words, each list cut to its `most` worth a look."""
        lines = [self._counts_line()]
        if self.multi_label:
            lines += self._label_change_lines(most)
        else:
            lines += self._label_issue_lines(most)
        return lines + self._duplicate_and_outlier_lines(most)

    def _label_issue_lines(self, most: int | None) -> list[str]:
        lines = [
            f"Likely mislabelled: {len(self.label_issues)}"
            + (
                " (given label, then the likely one with its probability)"
                if self.label_issues
                else ""
            )
        ]
        for issue in self.label_issues[:most]:
            lines.append(
                f"  {printable(issue.path)}: {issue.label} -> {issue.suggested} "
                f"({issue.confidence:.2f})"
            )
        return lines + _more(self.label_issues, most)

    def _label_change_lines(self, most: int | None) -> list[str]:
        lines = []
        for kind, sign, changes in (
            ("missing", "+", self.missing_labels),
            ("extra", "-", self.extra_labels),
        ):
            lines.append(
                f"Likely {kind} labels: {len(changes)}"
                + (
                    f" (the photo's labels, then {sign} the label, with how likely it is {kind})"
                    if changes
                    else ""
                )
            )
            for change in changes[:most]:
                given = " ".join(change.labels) or "no label"
                lines.append(
                    f"  {printable(change.path)}: {given} {sign} {change.label} "
                    f"({change.wrong:.2f})"
                )
            lines += _more(changes, most)
        return lines

    def _duplicate_and_outlier_lines(self, most: int | None) -> list[str]:
        straddling = sum(pair.straddles for pair in self.near_duplicates)
        lines = [
            f"Near-duplicates: {len(self.near_duplicates)} pairs"
            + (f", {straddling} across train and validation or test" if straddling else "")
        ]
        for pair in self.near_duplicates[:most]:
            how = "identical" if pair.identical else f"similarity {pair.similarity:.3f}"
            notes = [how]
            if pair.across_labels:
                notes.append(f"labels {pair.labels[0]} and {pair.labels[1]}")
            if pair.straddles:
                notes.append(f"{pair.splits[0]} and {pair.splits[1]}")
            lines.append(
                f"  {printable(pair.paths[0])} ~ {printable(pair.paths[1])} ({'; '.join(notes)})"
            )
        lines += _more(self.near_duplicates, most)
        lines.append(f"Outliers (far from every label): {len(self.outliers)}")
        for outlier in self.outliers[:most]:
            lines.append(
                f"  {printable(outlier.path)} ({outlier.label}, novelty {outlier.novelty:.3f})"
            )
        lines += _more(self.outliers, most)
        return lines

    def _counts_line(self) -> str:
        counts = ", ".join(f"{label} {count}" for label, count in self.counts.items())
        line = f"Photos per label: {counts}"
        if self.imbalance >= IMBALANCE:
            largest = max(self.counts, key=self.counts.get)
            smallest = min(self.counts, key=self.counts.get)
            line += (
                f"; imbalanced: {largest} has {self.imbalance:.1f} times the photos of "
                f"{smallest} (train --class_weights balanced, the default, makes up for it)"
            )
        return line


def _more(items: Sequence, most: int | None) -> list[str]:
    if most is not None and len(items) > most:
        return [f"  ... and {len(items) - most} more"]
    return []


# The whole check -------------------------------------------------------------------------------


def check_photos(
    images: Sequence[LabelledImage],
    labels: Sequence[str],
    features: np.ndarray,
    near_duplicate: float = NEAR_DUPLICATE,
    multi_label: bool = False,
) -> Checkup:
    """The checkup of labelled photos whose features are `features` (rows aligned);
    `multi_label`: each photo has its `labels`, any number, rather than one `label`."""
    with one_blas_thread():
        checkup = Checkup(list(labels), {}, multi_label=multi_label)
        checkup.digests = {str(image.path): image.digest for image in images}
        if multi_label:
            _check_label_sets(images, checkup, features)
        else:
            _check_labels(images, checkup, features)
        _check_likeness(images, checkup, features, near_duplicate)
        return checkup


def _check_labels(images: Sequence[LabelledImage], checkup: Checkup, features: np.ndarray) -> None:
    """Counts and likely mislabelled photos: one label each."""
    labels = checkup.labels
    index = {label: position for position, label in enumerate(labels)}
    given = np.array([index[image.label] for image in images], np.int64)
    checkup.counts = {label: int((given == row).sum()) for row, label in enumerate(labels)}
    if len(set(given.tolist())) < 2:
        return
    noise = label_noise(features, given, len(labels))
    rows = np.flatnonzero(noise.wrong >= LISTED)
    for row in rows[np.argsort(-noise.wrong[rows], kind="stable")]:
        others = noise.probabilities[row].copy()
        others[given[row]] = -1.0
        suggested = int(np.argmax(others))
        checkup.label_issues.append(
            LabelIssue(
                str(images[row].path),
                images[row].label,
                labels[suggested],
                float(noise.probabilities[row, suggested]),
                float(noise.probabilities[row, given[row]]),
                float(noise.wrong[row]),
            )
        )


def _check_label_sets(
    images: Sequence[LabelledImage], checkup: Checkup, features: np.ndarray
) -> None:
    """Counts and likely missing and extra labels: any number of labels each."""
    labels = checkup.labels
    given = np.array([[label in image.labels for label in labels] for image in images], bool)
    given = given.reshape(len(images), len(labels))
    checkup.counts = {label: int(given[:, row].sum()) for row, label in enumerate(labels)}
    if len(images) < 2:
        return
    found = missing_and_extra_labels(features, given)
    rows, columns = np.nonzero(found.wrong >= LISTED)
    for row, column in sorted(zip(rows, columns, strict=True), key=lambda cell: -found.wrong[cell]):
        change = LabelChange(
            str(images[row].path),
            tuple(images[row].labels),
            labels[column],
            float(found.probabilities[row, column]),
            float(found.wrong[row, column]),
        )
        (checkup.extra_labels if given[row, column] else checkup.missing_labels).append(change)


def _labels_of(image: LabelledImage, multi_label: bool) -> str:
    """How a photo's labels read in a finding: its label, or its labels separated by spaces."""
    return " ".join(image.labels) if multi_label else image.label


def _check_likeness(
    images: Sequence[LabelledImage],
    checkup: Checkup,
    features: np.ndarray,
    near_duplicate: float,
) -> None:
    """Near-duplicates and outliers."""
    if len(images) < 2:
        return
    multi_label = checkup.multi_label
    for first, second, similarity in near_duplicate_pairs(features, near_duplicate):
        pair = (images[first], images[second])
        checkup.near_duplicates.append(
            NearDuplicate(
                (str(pair[0].path), str(pair[1].path)),
                (_labels_of(pair[0], multi_label), _labels_of(pair[1], multi_label)),
                (pair[0].split, pair[1].split),
                similarity,
                pair[0].digest == pair[1].digest,
            )
        )
    # Across labels and across splits first: those cost accuracy or flatter the test.
    checkup.near_duplicates.sort(
        key=lambda pair: (not pair.across_labels, not pair.straddles, -pair.similarity)
    )
    scores = out_of_fold_scores(features)
    for row in outlier_rows(scores):
        checkup.outliers.append(
            Outlier(str(images[row].path), _labels_of(images[row], multi_label), float(scores[row]))
        )


def check_folder(
    tf_files: Path,
    engine: str | None = None,
    bottleneck_dir: Path | None = None,
    near_duplicate: float = NEAR_DUPLICATE,
    say: Callable[[str], None] = print,
    multi_label: bool | None = None,
) -> Checkup:
    """Check TF_FILES/data with the features its model was trained on (tensorguess.json says
    which backbone, precision and split); the default backbone when there is no model yet.
    `multi_label`: None, as the model was trained, else multi-label when labels.csv exists."""
    found = folder_features(tf_files, engine, bottleneck_dir, say, multi_label)
    checkup = check_photos(
        found.images, found.labels, found.vectors, near_duplicate, found.multi_label
    )
    checkup.skipped = found.skipped
    return checkup


@dataclass(frozen=True)
class FolderFeatures:
    """The photos of TF_FILES/data that have features, their features (rows aligned), the
    labels, what was skipped with the reason, and whether a photo may have several labels."""

    images: list[LabelledImage]
    labels: list[str]
    vectors: np.ndarray
    skipped: list[tuple[str, str]]
    multi_label: bool = False


def folder_features(
    tf_files: Path,
    engine: str | None = None,
    bottleneck_dir: Path | None = None,
    say: Callable[[str], None] = print,
    multi_label: bool | None = None,
) -> FolderFeatures:
    """The features doctor checks TF_FILES/data on: from the cache, computing what is missing
    with the model's backbone (the default one before any model is trained). The scan's
    mode (single- or multi-label, and why) and its warnings are said first."""
    from tensorguess.features.engines import resolved_engine

    tf_files = Path(tf_files)
    trained = read_metadata(tf_files)
    if multi_label is None and trained.get("task") == MULTI_LABEL:
        multi_label = True
    scan = scan_data(
        tf_files / "data",
        trained.get("validation_percentage", VALIDATION_PERCENTAGE),
        trained.get("testing_percentage", TESTING_PERCENTAGE),
        multi_label=multi_label,
        labels_csv=tf_files / LABELS_CSV,
    )
    say(scan.mode)
    for message in scan.warnings:
        say(f"warning: {message}")
    cache_root = bottleneck_dir or tf_files / BOTTLENECK_DIR
    engine = resolved_engine(engine, trained.get("precision"))
    skipped = [(str(path), reason) for path, reason in scan.skipped]
    vectors = _recorded_features(scan.images, trained, cache_root, engine)
    if vectors is not None:
        say(f"Features: {len(vectors)} from cache ({trained['backbone']})")
        return FolderFeatures(scan.images, scan.labels, vectors, skipped, scan.multi_label)
    from tensorguess.features.backbones import get_backbone
    from tensorguess.features.bottlenecks import cached_features

    backbone = get_backbone(trained.get("backbone", DEFAULT_BACKBONE), trained.get("image_size"))
    features = cached_features(
        backbone,
        [image.path for image in scan.images],
        cache_root,
        digests=[image.digest for image in scan.images],
        engine=engine,
    )
    say(f"Features: {features.describe()} ({backbone.name})")
    rows = np.flatnonzero(features.ok)
    skipped += [
        (str(scan.images[row].path), reason) for row, reason in sorted(features.problems.items())
    ]
    return FolderFeatures(
        [scan.images[row] for row in rows],
        scan.labels,
        features.vectors[rows],
        skipped,
        scan.multi_label,
    )


@dataclass(frozen=True)
class _RecordedBackbone:
    """What tensorguess.json recorded of the model's backbone: enough to find its features in
    the cache without loading it (importing TensorFlow and building it take seconds)."""

    cache_key: str
    feature_dim: int


def _recorded_features(
    images: Sequence[LabelledImage], trained: dict, cache_root: Path, engine: str
) -> np.ndarray | None:
    """Every photo's features from the cache, if the model's metadata says where and they
    are all there; None otherwise (then the backbone is loaded and computes what is missing)."""
    from tensorguess.features.bottlenecks import BottleneckCache

    try:
        recorded = _RecordedBackbone(
            str(trained["backbone_cache_key"]), int(trained["head"]["layers"][0][0])
        )
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    cache = BottleneckCache(cache_root, recorded, engine)
    vectors = []
    for image in images:
        vector = cache.get(image.digest)
        if vector is None:
            return None
        vectors.append(vector)
    return np.stack(vectors) if vectors else None
