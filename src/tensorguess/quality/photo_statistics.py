"""The statistics behind `tensorguess doctor`, on arrays of features alone (no files).

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
  `NEAR_DUPLICATE`.
- Outliers: scores (out-of-fold novelty, features/novelty.py) past Tukey's far-out fence
  (the third quartile plus `OUTLIER_FENCE` interquartile ranges).
"""

from __future__ import annotations

import numpy as np

from tensorguess.features.novelty import unit_length

# Cosine similarity of features from which two photos count as near-duplicates. Re-encoded
# copies of web photos (JPEG quality 60, 20% brighter) measured 0.964-0.986; the most alike
# distinct photos 0.951 (sign-digits' hands on one background) and 0.884 (superheroes).
NEAR_DUPLICATE = 0.96
FOLDS = 5
# How far the shared covariance is pulled towards a multiple of the identity (0 to 1).
SHRINKAGE = 0.5
OUTLIER_FENCE = 3.0
# Rows of the similarity matrix computed at a time: memory stays small for any folder.
SIMILARITY_BLOCK = 1024
# cleanlab's constants: confident thresholds' floor, float comparison, division guard.
_LEAST_THRESHOLD = 2e-6
_EPSILON = 1e-6
_TINY = 1e-100


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
