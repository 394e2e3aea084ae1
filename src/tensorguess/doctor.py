"""Know your data: photos whose label looks wrong, near-duplicates, outliers and label counts.

`tensorguess doctor TF_FILES` (and the end of `train`) only reads: nothing a user gave us is
moved, renamed or deleted; it lists, and the user decides. Everything comes from the cached
features of the photos in data/ (computed first where missing), so a check of thousands of
photos takes seconds.

- Label issues: confident learning (Northcutt, Jiang and Chuang, JAIR 2021) on out-of-fold
  probabilities. `find_label_issues` here is cleanlab's `filter.find_label_issues` with its
  defaults (`filter_by="prune_by_noise_rate"`), rewritten in numpy because cleanlab would
  bring pandas and scikit-learn (about 250 MB); the tests check that both list the same
  photos. The out-of-fold probabilities come from a Gaussian classifier of the features
  scaled to length 1 (one covariance shared by the labels, shrunk halfway to a multiple of
  the identity: linear discriminant analysis), fitted on all folds but one, with one
  temperature fitted to the held-out probabilities. It is closed-form, and out of fold it
  was more accurate than the softmax head (docs/accuracy.md), which is what confident
  learning needs. Issues are ranked by the probability of the given label, lowest first.
- Near-duplicates: pairs of photos whose features' cosine similarity reaches
  `NEAR_DUPLICATE`, byte-identical ones included and marked; a pair that straddles train and
  validation or test makes the test figures flatter the model.
- Outliers: photos far from every label: out-of-fold novelty scores (novelty.py: a photo
  is scored against a subspace fitted without it, which a far photo would otherwise bend
  towards itself) past Tukey's far-out fence (the third quartile plus `OUTLIER_FENCE`
  interquartile ranges).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tensorguess.dataset import TEST, TRAIN, VALIDATION, LabelledImage, scan_data
from tensorguess.files import printable
from tensorguess.model_files import METADATA_FILE
from tensorguess.novelty import one_blas_thread, out_of_fold_scores, unit_length

# Cosine similarity of features from which two photos count as near-duplicates. Re-encoded
# copies of web photos (JPEG quality 60, 20% brighter) measured 0.964-0.986; the most alike
# distinct photos 0.951 (sign-digits' hands on one background) and 0.884 (superheroes).
NEAR_DUPLICATE = 0.96
FOLDS = 5
# How far the shared covariance is pulled towards a multiple of the identity (0 to 1).
SHRINKAGE = 0.5
OUTLIER_FENCE = 3.0
# A far more numerous label than another (by this factor) is called out.
IMBALANCE = 3.0
# Rows of the similarity matrix computed at a time: memory stays small for any folder.
SIMILARITY_BLOCK = 1024
# cleanlab's constants: confident thresholds' floor, float comparison, division guard.
_LEAST_THRESHOLD = 2e-6
_EPSILON = 1e-6
_TINY = 1e-100


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


# Out-of-fold probabilities ------------------------------------------------------------------


def gaussian_distances(
    train: np.ndarray, labels: np.ndarray, count: int, features: np.ndarray
) -> np.ndarray:
    """Squared Mahalanobis distances [N, count] of `features` to each label's mean in `train`,
    under one shrunk covariance shared by the labels; a label absent from `train` is at inf."""
    present = np.unique(labels)
    means = np.stack([train[labels == label].mean(axis=0) for label in present])
    centred = train - means[np.searchsorted(present, labels)]
    covariance = centred.T @ centred / len(train)
    scale = np.trace(covariance) / len(covariance)
    covariance = (1 - SHRINKAGE) * covariance + SHRINKAGE * scale * np.eye(len(covariance))
    lower = np.linalg.cholesky(covariance)
    whitened = np.linalg.solve(lower, features.T).T
    whitened_means = np.linalg.solve(lower, means.T).T
    distances = np.full((len(features), count), np.inf)
    distances[:, present] = (
        (whitened**2).sum(axis=1, keepdims=True)
        - 2 * whitened @ whitened_means.T
        + (whitened_means**2).sum(axis=1)
    )
    return distances


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    exponentials = np.exp(logits)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def out_of_fold_probabilities(
    features: np.ndarray, labels: np.ndarray, count: int, folds: int = FOLDS, seed: int = 0
) -> np.ndarray:
    """P(label | photo) [N, count] for each photo from a classifier that never saw it."""
    scaled = unit_length(features)
    folds = max(2, min(folds, len(labels)))
    fold = np.empty(len(labels), np.int64)
    fold[np.random.default_rng(seed).permutation(len(labels))] = np.arange(len(labels)) % folds
    distances = np.zeros((len(labels), count))
    for held_out in range(folds):
        rows = fold == held_out
        distances[rows] = gaussian_distances(scaled[~rows], labels[~rows], count, scaled[rows])
    # In 1,280 dimensions the raw posteriors are far too sure; one temperature, fitted to the
    # held-out photos' given labels, makes them honest enough to rank by.
    best, best_loss = 1.0, np.inf
    for temperature in np.geomspace(0.1, 1e4, 81):
        probabilities = _softmax(-0.5 * distances / temperature)
        loss = -np.log(probabilities[np.arange(len(labels)), labels] + 1e-12).mean()
        if loss < best_loss:
            best, best_loss = temperature, loss
    return _softmax(-0.5 * distances / best)


# Confident learning, as cleanlab computes it ---------------------------------------------------


def _round_preserving_sum(values: np.ndarray) -> np.ndarray:
    """Round to whole numbers keeping the (rounded) total: cleanlab's round_preserving_sum."""
    values = np.asarray(values, dtype=float)
    rounded = values.round()
    total = np.sum(values).round()
    while abs(np.sum(rounded).round() - total) > _EPSILON:
        difference = np.round(total - np.sum(rounded).round())
        step = -1 if difference < 0 else 1
        changes = min(int(abs(difference)), len(values))
        for index in np.argsort(values - rounded)[::-step][:changes]:
            rounded[index] += step
    return rounded


def _round_rows(matrix: np.ndarray) -> np.ndarray:
    return np.array([_round_preserving_sum(row) for row in matrix]).astype(int)


def confident_joint(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Counts [given label, true label] of photos confidently of each true label, calibrated
    to the given labels' counts: cleanlab's compute_confident_joint."""
    count = probabilities.shape[1]
    label_counts = np.bincount(labels, minlength=count)
    thresholds = np.array(
        [
            probabilities[labels == label, label].mean() if label_counts[label] else 2.0
            for label in range(count)
        ]
    )
    confident = probabilities >= np.maximum(thresholds, _LEAST_THRESHOLD) - _EPSILON
    confident_labels = confident.sum(axis=1)
    guess = np.where(confident_labels > 1, probabilities.argmax(axis=1), confident.argmax(axis=1))
    rows = confident_labels > 0
    # Built as [true, given] and transposed, as cleanlab does: the sums below then add up in
    # the same order, so the roundings, ties included, come out the same.
    joint = np.zeros((count, count), np.int64)
    np.add.at(joint, (guess[rows], labels[rows]), 1)
    joint = joint.T
    np.fill_diagonal(joint, joint.diagonal().clip(min=1))
    calibrated = (joint.T / np.clip(joint.sum(axis=1), _TINY, None) * label_counts).T
    calibrated = calibrated / np.clip(np.sum(calibrated), _TINY, None) * sum(label_counts)
    return _round_rows(calibrated)


def find_label_issues(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Which photos' given labels are likely wrong (a boolean mask): cleanlab's
    find_label_issues with its defaults (prune by noise rate, at least one photo kept per
    label)."""
    count = probabilities.shape[1]
    prune = confident_joint(labels, probabilities).T.astype(float)  # [true, given]
    diagonal = prune.diagonal().copy()
    kept = np.maximum(diagonal, 1)
    prune = prune - (kept - diagonal) / np.maximum(np.count_nonzero(prune, axis=0) - 1.0, 1.0)
    prune[prune < 0] = 0
    np.fill_diagonal(prune, kept)
    prune = _round_rows(prune.astype(int))
    issues = np.zeros(len(labels), bool)
    for given in range(count):
        rows = np.flatnonzero(labels == given)
        if len(rows) <= 1:
            continue
        for true in range(count):
            wrong = prune[true, given]
            if true != given and wrong > 0:
                # The photos of this given label most likely to be of `true` instead.
                margin = probabilities[rows, true] - probabilities[rows, given]
                issues[rows[np.argsort(-margin)[:wrong]]] = True
    # A photo the classifier gives its own label is not called mislabelled.
    nudged = probabilities.copy()
    nudged[np.arange(len(labels)), labels] += _EPSILON
    issues[nudged.argmax(axis=1) == labels] = False
    return issues


# Near-duplicates and outliers --------------------------------------------------------------------


def near_duplicate_pairs(
    features: np.ndarray, threshold: float = NEAR_DUPLICATE
) -> list[tuple[int, int, float]]:
    """(i, j, similarity) for i < j whose features' cosine similarity reaches `threshold`."""
    scaled = unit_length(features).astype(np.float32)
    pairs = []
    for start in range(0, len(scaled), SIMILARITY_BLOCK):
        block = scaled[start : start + SIMILARITY_BLOCK] @ scaled.T
        rows, columns = np.nonzero(block >= threshold - 1e-6)
        for row, column in zip(rows + start, columns, strict=True):
            if row < column:
                pairs.append((int(row), int(column), float(min(block[row - start, column], 1.0))))
    return pairs


def outlier_rows(scores: np.ndarray) -> np.ndarray:
    """Rows whose score is past Tukey's far-out fence, highest first."""
    if len(scores) < 4:
        return np.zeros(0, np.int64)
    first, third = np.percentile(scores, [25, 75])
    fence = third + OUTLIER_FENCE * (third - first)
    rows = np.flatnonzero(scores > fence)
    return rows[np.argsort(-scores[rows])]


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
    from tensorguess.engines import resolved_engine
    from tensorguess.options import TrainingOptions
    from tensorguess.pipeline import BOTTLENECK_DIR

    tf_files = Path(tf_files)
    trained = _trained_with(tf_files)
    defaults = TrainingOptions()
    scan = scan_data(
        tf_files / "data",
        trained.get("validation_percentage", defaults.validation_percentage),
        trained.get("testing_percentage", defaults.testing_percentage),
    )
    cache_root = bottleneck_dir or tf_files / BOTTLENECK_DIR
    engine = resolved_engine(engine, trained.get("precision"))
    skipped = [(str(path), reason) for path, reason in scan.skipped]
    vectors = _recorded_features(scan.images, trained, cache_root, engine)
    if vectors is not None:
        say(f"Features: {len(vectors)} from cache ({trained['backbone']})")
        images = scan.images
    else:
        from tensorguess.backbones import get_backbone
        from tensorguess.bottlenecks import cached_features

        backbone = get_backbone(
            trained.get("backbone", defaults.backbone), trained.get("image_size")
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
    from tensorguess.bottlenecks import BottleneckCache

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


def _trained_with(tf_files: Path) -> dict:
    """The settings of the model in TF_FILES (its tensorguess.json), or {} when there is none."""
    try:
        metadata = json.loads((tf_files / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return metadata if isinstance(metadata, dict) else {}
