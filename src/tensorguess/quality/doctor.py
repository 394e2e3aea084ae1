"""Know your data: photos whose label looks wrong, near-duplicates, outliers and label counts.

`tensorguess doctor TF_FILES` (and the end of `train`) only reads: nothing a user gave us is
moved, renamed or deleted; it lists, and the user decides. Everything comes from the cached
features of the photos in data/ (computed first where missing), so a check of thousands of
photos takes seconds. The statistics are photo_statistics.py's; this module turns them into
findings about photos and finds the features for them.

- Label issues: confident learning on out-of-fold probabilities, ranked by the probability
  of the given label, lowest first.
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
from tensorguess.data.dataset import (
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
    NEAR_DUPLICATE,
    find_label_issues,
    near_duplicate_pairs,
    out_of_fold_probabilities,
    outlier_rows,
)

# A far more numerous label than another (by this factor) is called out.
IMBALANCE = 3.0


@dataclass(frozen=True)
class LabelIssue:
    """A photo whose given label looks wrong: the label it likely has, and how likely that is.

    `confidence` is the out-of-fold probability of `suggested`; `label_score` that of `label`.
    """

    path: str
    label: str
    suggested: str
    confidence: float
    label_score: float


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
        }

    def summary_lines(self, most: int | None = None) -> list[str]:
        """The findings in words, each list cut to its `most` worth a look."""
        lines = [self._counts_line()]
        lines.append(
            f"Likely mislabelled: {len(self.label_issues)}"
            + (
                " (given label, then the likely one with its probability)"
                if self.label_issues
                else ""
            )
        )
        for issue in self.label_issues[:most]:
            lines.append(
                f"  {printable(issue.path)}: {issue.label} -> {issue.suggested} "
                f"({issue.confidence:.2f})"
            )
        lines += _more(self.label_issues, most)
        straddling = sum(pair.straddles for pair in self.near_duplicates)
        lines.append(
            f"Near-duplicates: {len(self.near_duplicates)} pairs"
            + (f", {straddling} across train and validation or test" if straddling else "")
        )
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
) -> Checkup:
    """The checkup of labelled photos whose features are `features` (rows aligned)."""
    with one_blas_thread():
        return _check_photos(images, list(labels), features, near_duplicate)


def _check_photos(
    images: Sequence[LabelledImage],
    labels: list[str],
    features: np.ndarray,
    near_duplicate: float,
) -> Checkup:
    index = {label: position for position, label in enumerate(labels)}
    given = np.array([index[image.label] for image in images], np.int64)
    counts = {label: int((given == position).sum()) for position, label in enumerate(labels)}
    checkup = Checkup(labels, counts)
    if len(images) < 2:
        return checkup
    if len(set(given.tolist())) > 1:
        probabilities = out_of_fold_probabilities(features, given, len(labels))
        rows = np.flatnonzero(find_label_issues(given, probabilities))
        rows = rows[np.argsort(probabilities[rows, given[rows]], kind="stable")]
        for row in rows:
            suggested = int(np.argmax(probabilities[row]))
            checkup.label_issues.append(
                LabelIssue(
                    str(images[row].path),
                    images[row].label,
                    labels[suggested],
                    float(probabilities[row, suggested]),
                    float(probabilities[row, given[row]]),
                )
            )
    for first, second, similarity in near_duplicate_pairs(features, near_duplicate):
        pair = (images[first], images[second])
        checkup.near_duplicates.append(
            NearDuplicate(
                (str(pair[0].path), str(pair[1].path)),
                (pair[0].label, pair[1].label),
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
            Outlier(str(images[row].path), images[row].label, float(scores[row]))
        )
    return checkup


def check_folder(
    tf_files: Path,
    engine: str | None = None,
    bottleneck_dir: Path | None = None,
    near_duplicate: float = NEAR_DUPLICATE,
    say: Callable[[str], None] = print,
) -> Checkup:
    """Check TF_FILES/data with the features its model was trained on (tensorguess.json says
    which backbone, precision and split); the default backbone when there is no model yet."""
    from tensorguess.features.engines import resolved_engine

    tf_files = Path(tf_files)
    trained = read_metadata(tf_files)
    scan = scan_data(
        tf_files / "data",
        trained.get("validation_percentage", VALIDATION_PERCENTAGE),
        trained.get("testing_percentage", TESTING_PERCENTAGE),
    )
    cache_root = bottleneck_dir or tf_files / BOTTLENECK_DIR
    engine = resolved_engine(engine, trained.get("precision"))
    skipped = [(str(path), reason) for path, reason in scan.skipped]
    vectors = _recorded_features(scan.images, trained, cache_root, engine)
    if vectors is not None:
        say(f"Features: {len(vectors)} from cache ({trained['backbone']})")
        images = scan.images
    else:
        from tensorguess.features.backbones import get_backbone
        from tensorguess.features.bottlenecks import cached_features

        backbone = get_backbone(
            trained.get("backbone", DEFAULT_BACKBONE), trained.get("image_size")
        )
        features = cached_features(
            backbone,
            [image.path for image in scan.images],
            cache_root,
            digests=[image.digest for image in scan.images],
            engine=engine,
        )
        say(f"Features: {features.describe()} ({backbone.name})")
        rows = np.flatnonzero(features.ok)
        images, vectors = [scan.images[row] for row in rows], features.vectors[rows]
        skipped += [
            (str(scan.images[row].path), reason)
            for row, reason in sorted(features.problems.items())
        ]
    checkup = check_photos(images, scan.labels, vectors, near_duplicate)
    checkup.skipped = skipped
    return checkup


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
