"""None of the above: how unlike every training photo a photo is, and where "unknown" starts.

The novelty score is the distance of a photo's features, scaled to length 1, from the
principal subspace of the training photos' scaled features: the few directions that explain
`VARIANCE_KEPT` of their variance (the residual of ViM, Wang et al. 2022; a PCA
reconstruction error). A photo of none of the labels lies largely outside that subspace. Of
the scores measured (docs/accuracy.md: Mahalanobis distances per label, nearest training
photos), it separated photos of other subjects best, and it is small: the mean and a few
dozen directions, so the exported graph computes it beside the softmax (`novelty:0`), on
whatever engine runs the network and in the same precision.

The threshold is calibrated on photos the classifier did not learn from (the validation
split) so that about `EXCEEDING` (2%) of photos like the training ones exceed it. With
fewer than `LEAST_CALIBRATION` validation photos, out-of-fold scores of the training photos
serve instead. The features must be the exported model's own: after fine-tuning, the
pipeline computes them again with the tuned backbone (the cached ones describe the old one).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

# Directions kept: those explaining this share of the training features' variance.
VARIANCE_KEPT = 0.7
# The share of photos like the training ones whose score exceeds the threshold.
EXCEEDING = 0.02
LEAST_CALIBRATION = 20
FOLDS = 5
VALIDATION = "validation photos"
OUT_OF_FOLD = "out-of-fold training photos"


@contextmanager
def one_blas_thread():
    """Run numpy's linear algebra on one thread for a while.

    OpenBLAS's threads spin while they wait: on a machine whose cores are busy, an eigh of a
    1,280 x 1,280 matrix took 10-16 s on two threads and 0.6 s on one (the sizes here gain
    little from a second thread even on an idle machine).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        yield


@dataclass(frozen=True)
class Subspace:
    """The mean of the scaled training features [D] and the principal directions [r, D]."""

    mean: np.ndarray
    directions: np.ndarray

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Novelty scores [N] of features [N, D]: the distance from the subspace."""
        centred = unit_length(features) - self.mean
        residual = centred - (centred @ self.directions.T) @ self.directions
        return np.linalg.norm(residual, axis=1)


@dataclass(frozen=True)
class NoveltyModel:
    """A fitted novelty score and its threshold, and what the threshold was calibrated on."""

    subspace: Subspace
    threshold: float
    calibration: str
    calibrated_on: int

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Novelty scores [N] of features [N, D]."""
        return self.subspace.scores(features)

    def describe(self) -> dict:
        """What tensorguess.json records: the threshold and how it was found."""
        return {
            "score": "distance from the principal subspace of the training features",
            "output": "novelty:0",
            "threshold": self.threshold,
            "exceeding": EXCEEDING,
            "calibrated_on": f"{self.calibrated_on} {self.calibration}",
            "directions": int(len(self.subspace.directions)),
        }


def unit_length(features: np.ndarray) -> np.ndarray:
    """Each feature vector scaled to length 1 (an all-zero one stays zero)."""
    features = np.asarray(features, np.float64)
    lengths = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(lengths, 1e-12)


def fit_subspace(features: np.ndarray) -> Subspace:
    """The principal subspace of `features` [N, D] scaled to length 1."""
    scaled = unit_length(features)
    mean = scaled.mean(axis=0)
    centred = scaled - mean
    # The eigenvectors of the smaller of the two Gram matrices: seconds where an SVD of a
    # 2,000 x 1,280 matrix took a minute on a busy 2-core machine.
    if len(centred) >= centred.shape[1]:
        variance, directions = np.linalg.eigh(centred.T @ centred)
        variance, directions = variance[::-1], directions[:, ::-1].T
    else:
        variance, photos = np.linalg.eigh(centred @ centred.T)
        variance, photos = variance[::-1], photos[:, ::-1]
        directions = (centred.T @ photos / np.sqrt(np.maximum(variance, 1e-300))).T
    variance = np.maximum(variance, 0)
    # Beyond N - 1 directions the "subspace" is the training photos themselves.
    most = max(len(centred) - 1, 0)
    if not variance.sum() or not most:
        return Subspace(mean, directions[:0])
    kept = int(np.searchsorted(np.cumsum(variance) / variance.sum(), VARIANCE_KEPT)) + 1
    return Subspace(mean, directions[: min(kept, most)])


def out_of_fold_scores(features: np.ndarray, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Each photo's score against a subspace fitted without it (its fold left out)."""
    count = len(features)
    folds = max(2, min(folds, count))
    fold = np.empty(count, np.int64)
    fold[np.random.default_rng(seed).permutation(count)] = np.arange(count) % folds
    scores = np.zeros(count)
    for held_out in range(folds):
        rows = fold == held_out
        if rows.any() and (~rows).any():
            scores[rows] = fit_subspace(features[~rows]).scores(features[rows])
    return scores


def fit_novelty(train: np.ndarray, validation: np.ndarray) -> NoveltyModel:
    """The score fitted on the training features, its threshold calibrated as described above."""
    with one_blas_thread():
        subspace = fit_subspace(train)
        if len(validation) >= LEAST_CALIBRATION:
            calibration, scores = VALIDATION, subspace.scores(validation)
        else:
            calibration, scores = OUT_OF_FOLD, out_of_fold_scores(train)
    threshold = float(np.quantile(scores, 1 - EXCEEDING)) if len(scores) else float("inf")
    return NoveltyModel(subspace, threshold, calibration, len(scores))


def novelty_tensor(model: NoveltyModel, features):
    """The novelty score [B] of a features tensor [B, D], in TensorFlow ops, for the export."""
    import tensorflow as tf

    mean = tf.constant(model.subspace.mean, tf.float32)
    directions = tf.constant(model.subspace.directions, tf.float32)
    scaled = features / tf.maximum(tf.norm(features, axis=1, keepdims=True), 1e-12)
    centred = scaled - mean
    residual = centred - tf.matmul(tf.matmul(centred, directions, transpose_b=True), directions)
    return tf.norm(residual, axis=1)
