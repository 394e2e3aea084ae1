"""The statistics behind `tensorguess doctor`, on arrays of features alone (no files).

- Label issues: out-of-fold probabilities made honest by a model of the label noise, so
  that a photo is listed when its given label is likely wrong, and how likely is said.
  Each photo is scored by a classifier that never saw it: a Gaussian classifier of the
  features, square-rooted (they are averages of non-negative activations: the root evens
  out their scale) and scaled to length 1, with one covariance shared by the labels and
  shrunk towards a multiple of the identity (linear discriminant analysis), fitted on all
  folds but one. Its probabilities are then fitted to the given labels together with the
  noise: one temperature and one noise rate, by maximum likelihood, under the model "a
  given label is the true one, except for a share of photos given another label at random".
  From them, each photo's probability that its given label is wrong (Bayes' rule); photos
  past `LISTED` are listed, the most likely wrong first. Fitting the temperature without
  the noise (as before) let the flipped photos flatten every probability, and confident
  learning's cut-off (cleanlab's `find_label_issues`) then listed about three photos for
  each one wrong on clothing-extra; docs/accuracy.md has the measurements.
- Missing and extra labels (multi-label photos): the same, one label against the rest. Per
  label, the linear discriminant of the photos given it against the others, out of fold;
  then one temperature and two rates (of labels left out, and of labels given that are not
  there) fitted by maximum likelihood, and each photo's probability that a label is missing
  or extra by Bayes' rule.
- Near-duplicates: pairs of photos whose features' cosine similarity reaches
  `NEAR_DUPLICATE`.
- Outliers: scores (out-of-fold novelty, features/novelty.py) past Tukey's far-out fence
  (the third quartile plus `OUTLIER_FENCE` interquartile ranges).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tensorguess.features.novelty import unit_length

# Cosine similarity of features from which two photos count as near-duplicates. Re-encoded
# copies of web photos (JPEG quality 60, 20% brighter) measured 0.964-0.986; the most alike
# distinct photos 0.951 (sign-digits' hands on one background) and 0.884 (superheroes).
NEAR_DUPLICATE = 0.96
# Out of fold: each photo scored by a classifier fitted on the other nine tenths.
FOLDS = 10
# How far the shared covariance is pulled towards a multiple of the identity (0 to 1).
SHRINKAGE = 0.8
# A photo is listed when its given label is at least this likely wrong: one chance in four
# is worth a glance (docs/accuracy.md: the listed photos were wrong 3 times in 4 then).
LISTED = 0.25
# The grids the temperature and the noise rate are fitted on.
TEMPERATURES = np.geomspace(0.1, 1e4, 81)
NOISE_RATES = np.linspace(0.0, 0.3, 61)
# Multi-label: rounds of expectation-maximisation of the missing and extra rates, and their
# most (past it, the labels would say less than the features).
EM_ROUNDS = 30
MOST_NOISE = 0.3
OUTLIER_FENCE = 3.0
# Rows of the similarity matrix computed at a time: memory stays small for any folder.
SIMILARITY_BLOCK = 1024
_TINY = 1e-300


# Out-of-fold probabilities under label noise ---------------------------------------------------


def comparable(features: np.ndarray) -> np.ndarray:
    """Features as the label check compares them: square-rooted (keeping the sign), then
    scaled to length 1."""
    features = np.asarray(features, np.float64)
    return unit_length(np.sign(features) * np.sqrt(np.abs(features)))


def fold_numbers(count: int, folds: int = FOLDS, seed: int = 0) -> tuple[np.ndarray, int]:
    """Each of `count` photos' fold, drawn at random but the same for the same seed, and how
    many folds there are (at least two, at most one photo each)."""
    folds = max(2, min(folds, count))
    fold = np.empty(count, np.int64)
    fold[np.random.default_rng(seed).permutation(count)] = np.arange(count) % folds
    return fold, folds


def _shrunk(scatter: np.ndarray, photos: int) -> np.ndarray:
    """The covariance of a scatter matrix over `photos`, pulled towards a multiple of the
    identity by `SHRINKAGE`."""
    covariance = scatter / max(photos, 1)
    scale = np.trace(covariance) / len(covariance)
    return (1 - SHRINKAGE) * covariance + SHRINKAGE * scale * np.eye(len(covariance))


def out_of_fold_distances(
    features: np.ndarray, labels: np.ndarray, count: int, folds: int = FOLDS, seed: int = 0
) -> np.ndarray:
    """Each photo's squared Mahalanobis distances [N, count] to the labels' means over the
    photos of the other folds, under their one shrunk covariance shared by the labels; a
    label no other fold has is at inf."""
    scaled = comparable(features)
    fold, folds = fold_numbers(len(labels), folds, seed)
    # Each fold's scatter is everyone's less its own: two passes over the photos in all, not
    # one per fold.
    scatter = scaled.T @ scaled
    sums = np.zeros((count, scaled.shape[1]))
    np.add.at(sums, labels, scaled)
    distances = np.full((len(labels), count), np.inf)
    for held_out in range(folds):
        rows = fold == held_out
        if not rows.any():
            continue
        out = scaled[rows]
        label_sums = sums.copy()
        np.add.at(label_sums, labels[rows], -out)
        label_counts = np.bincount(labels[~rows], minlength=count)
        present = np.flatnonzero(label_counts)
        means = label_sums[present] / label_counts[present, None]
        within = scatter - out.T @ out - (means.T * label_counts[present]) @ means
        lower = np.linalg.cholesky(_shrunk(within, int(label_counts.sum())))
        whitened = np.linalg.solve(lower, out.T).T
        whitened_means = np.linalg.solve(lower, means.T).T
        distances[np.ix_(rows, present)] = (
            (whitened**2).sum(axis=1, keepdims=True)
            - 2 * whitened @ whitened_means.T
            + (whitened_means**2).sum(axis=1)
        )
    return distances


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    exponentials = np.exp(logits)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class LabelNoise:
    """What the photos' given labels and out-of-fold distances say about their true labels.

    `probabilities` [N, count]: P(true label | the photo, its given label); `wrong` [N]:
    P(the given label is wrong), 0 for a photo whose label no other fold has (no judging
    it); `noise_rate`: the share of labels given at random, fitted; `temperature`: the
    distances' scale, fitted.
    """

    probabilities: np.ndarray
    wrong: np.ndarray
    noise_rate: float
    temperature: float


def fit_label_noise(distances: np.ndarray, labels: np.ndarray, priors: bool = True) -> LabelNoise:
    """The temperature and noise rate under which the given `labels` are likeliest, and each
    photo's posterior over its true label (the module's docstring says the model).
    `priors`: weigh each label by its share of the photos (Bayes' rule for a Gaussian
    classifier's distances; not for logits that hold them already)."""
    count, rows = distances.shape[1], np.arange(len(labels))
    if count < 2:
        return LabelNoise(np.ones_like(distances), np.zeros(len(labels)), 0.0, 1.0)
    # Without them a small label (22 hats among 1,292 clothes) drew look-alike photos of the
    # large ones: listed photos were flipped 73% of the time on clothing-extra, 74% with.
    shares = np.log(np.maximum(np.bincount(labels, minlength=count), 1)) if priors else 0.0
    rates = NOISE_RATES[None, :]
    best = (np.inf, 1.0, 0.0)
    for temperature in TEMPERATURES:
        true = _softmax(-0.5 * distances / temperature + shares)[rows, labels][:, None]
        given = (1 - rates) * true + rates / (count - 1) * (1 - true)
        losses = -np.log(given + _TINY).mean(axis=0)
        if losses.min() < best[0]:
            best = (losses.min(), temperature, float(NOISE_RATES[losses.argmin()]))
    _, temperature, rate = best
    true = _softmax(-0.5 * distances / temperature + shares)
    # Times P(given label | true label): 1 - rate for itself, rate shared by the others.
    posterior = true * (rate / (count - 1))
    posterior[rows, labels] = true[rows, labels] * (1 - rate)
    total = posterior.sum(axis=1, keepdims=True)
    posterior = np.where(total > 0, posterior / np.maximum(total, _TINY), true)
    wrong = 1 - posterior[rows, labels]
    wrong[(total[:, 0] == 0) | ~np.isfinite(distances[rows, labels])] = 0.0
    return LabelNoise(posterior, wrong, rate, temperature)


def label_noise(
    features: np.ndarray, labels: np.ndarray, count: int, folds: int = FOLDS, seed: int = 0
) -> LabelNoise:
    """`fit_label_noise` on the out-of-fold distances of `features` (rows aligned with
    `labels`, indices among `count` labels)."""
    return fit_label_noise(out_of_fold_distances(features, labels, count, folds, seed), labels)


# Multi-label: missing and extra labels --------------------------------------------------------


def out_of_fold_label_evidence(
    features: np.ndarray, has: np.ndarray, folds: int = FOLDS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Each photo's evidence for each label, one label against the rest, from classifiers
    that never saw it: (log-odds from its features [N, L], log-odds of the label among the
    other folds' photos [N, L]). NaN where the other folds do not hold the label both ways.

    Per label, the linear discriminant of the photos with it against those without, both
    sharing one covariance. That of all photos, shrunk, serves every label of a fold: less
    the label's own between-class part (Sherman and Morrison's rank-one update), it is the
    label's shared within-class covariance, so one solve per fold does for all labels.
    """
    scaled = comparable(features)
    has = np.asarray(has, bool)
    evidence = np.full(has.shape, np.nan)
    prior = np.full(has.shape, np.nan)
    fold, folds = fold_numbers(len(has), folds, seed)
    for held_out in range(folds):
        rows = fold == held_out
        train, train_has = scaled[~rows], has[~rows]
        photos = len(train)
        positives = train_has.sum(axis=0)
        usable = np.flatnonzero((positives > 0) & (positives < photos))
        if not rows.any() or not len(usable):
            continue
        centred = train - train.mean(axis=0)
        covariance = _shrunk(centred.T @ centred, photos)
        inside = train_has[:, usable]
        with_means = inside.T @ train / positives[usable, None]
        without_means = (~inside).T @ train / (photos - positives[usable])[:, None]
        difference = with_means - without_means
        solved = np.linalg.solve(covariance, difference.T)
        between = (1 - SHRINKAGE) * positives[usable] * (photos - positives[usable]) / photos**2
        directions = solved / (1 - between * np.einsum("du,ud->u", solved, difference))
        midpoints = 0.5 * (with_means + without_means)
        evidence[np.ix_(rows, usable)] = scaled[rows] @ directions - np.einsum(
            "ud,du->u", midpoints, directions
        )
        prior[np.ix_(rows, usable)] = np.log(positives[usable] / (photos - positives[usable]))
    return evidence, prior


@dataclass(frozen=True)
class MissingAndExtra:
    """What multi-label photos' given labels and out-of-fold evidence say about their true
    labels.

    `probabilities` [N, L]: P(the photo has the label | the photo, its given labels);
    `wrong` [N, L]: P(the label is missing) where it is not given, P(it is extra) where it
    is, 0 where nothing can be said (no other fold holds the label both ways);
    `missing_rate`: the share of the labels photos have that were not given, fitted;
    `extra_rate`: the share of the labels photos lack that were given, fitted.
    """

    probabilities: np.ndarray
    wrong: np.ndarray
    missing_rate: float
    extra_rate: float
    temperature: float


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * logits))


def _has(true: np.ndarray, given: np.ndarray, missing: float, extra: float) -> np.ndarray:
    """P(the photo has the label | its features say `true`, the label is `given` or not)."""
    given_one = true * (1 - missing) + (1 - true) * extra
    return np.where(
        given,
        true * (1 - missing) / np.maximum(given_one, _TINY),
        true * missing / np.maximum(1 - given_one, _TINY),
    )


def _noise_rates(true: np.ndarray, given: np.ndarray) -> tuple[float, float, float]:
    """(missing rate, extra rate, mean log-likelihood of `given`) for probabilities `true`
    of having each label: the rates by expectation-maximisation."""
    missing, extra = 0.05, 0.01
    for _ in range(EM_ROUNDS):
        has = _has(true, given, missing, extra)
        missing = float((has * ~given).sum() / max(has.sum(), _TINY))
        extra = float(((1 - has) * given).sum() / max((1 - has).sum(), _TINY))
        missing, extra = min(missing, MOST_NOISE), min(extra, MOST_NOISE)
    given_one = true * (1 - missing) + (1 - true) * extra
    likelihood = np.where(given, given_one, 1 - given_one)
    return missing, extra, float(np.log(likelihood + _TINY).mean())


def fit_missing_and_extra(
    evidence: np.ndarray, prior: np.ndarray, given: np.ndarray
) -> MissingAndExtra:
    """The temperature of the evidence and the missing and extra rates under which the
    `given` labels [N, L] (booleans) are likeliest, and each photo's posterior per label.

    The model: a photo has a label with probability sigmoid(evidence / temperature + prior);
    a label it has is given but for a share (missing), one it lacks is given for a share
    (extra), the same shares for every label.
    """
    given = np.asarray(given, bool)
    judged = np.isfinite(evidence) & np.isfinite(prior)
    if not judged.any():
        zeros = np.zeros(given.shape)
        return MissingAndExtra(given.astype(float), zeros, 0.0, 0.0, 1.0)
    best = (-np.inf, 1.0, 0.0, 0.0)
    for temperature in TEMPERATURES:
        true = _sigmoid(evidence[judged] / temperature + prior[judged])
        missing, extra, likelihood = _noise_rates(true, given[judged])
        if likelihood > best[0]:
            best = (likelihood, float(temperature), missing, extra)
    _, temperature, missing, extra = best
    true = _sigmoid(np.where(judged, evidence / temperature + prior, 0.0))
    has = np.where(judged, _has(true, given, missing, extra), given)
    wrong = np.where(judged, np.where(given, 1 - has, has), 0.0)
    return MissingAndExtra(has, wrong, missing, extra, temperature)


def missing_and_extra_labels(
    features: np.ndarray, given: np.ndarray, folds: int = FOLDS, seed: int = 0
) -> MissingAndExtra:
    """`fit_missing_and_extra` on the out-of-fold evidence of `features` for the labels
    `given` [N, L] (booleans, rows aligned)."""
    return fit_missing_and_extra(*out_of_fold_label_evidence(features, given, folds, seed), given)


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
