"""Measure `tensorguess doctor` and `guessDir.sh --unknown` on the shared datasets, as
docs/accuracy.md reports them (run by hand: minutes, not a test).

  .venv/bin/python scripts/measure_doctor.py labels [--dataset clothing-extra] [--seeds 0 1 2]
  .venv/bin/python scripts/measure_doctor.py compare [--dataset clothing-extra] [--seeds 0 1 2]
  .venv/bin/python scripts/measure_doctor.py multilabel [--dataset clothing-extra]
  .venv/bin/python scripts/measure_doctor.py unknown [--preset balanced]

`labels`: a dataset with 5% of its photos moved to another label at random (a fixed seed
each), laid out as symlinks under WORK (the photos are read in place, never copied);
`doctor --json` runs on it with its feature cache in WORK/bottlenecks (computed by the first
run, warm for the others), and the flipped photos it lists are counted; the listed photos
that were not flipped are written to WORK/<dataset>-not-flipped.tsv to be looked at.
`compare`: the out-of-fold classifiers and cut-offs doctor could use, in-process on the same
cached features and the same kind of flips (the previous doctor's, confident learning on
LDA probabilities, needs cleanlab: the test extra).
`multilabel`: doctor's missing and extra labels, in-process, on made-up two-label photos
(the square-rooted features of two photos of different labels added), with 5% of the labels
they have left out and as many they lack given.
`unknown`: train on superheroes/train, then sort superheroes/test_data mixed with every
sign-digits photo and the photos of superheroes/train that training held out for testing,
with `--unknown`, and count the photos named unknown-*.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tensorguess.data.dataset import TEST, scan_data

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"
SIGN_DIGITS = DATASETS / "sign-digits" / "images"
SUPERHEROES = DATASETS / "superheroes"
LABELLED = {"sign-digits": SIGN_DIGITS, "clothing-extra": DATASETS / "clothing-extra"}
FLIPPED = 0.05


def tensorguess(*arguments) -> tuple[subprocess.CompletedProcess, float]:
    """Run the command line; (the finished process, its wall time in seconds)."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "tensorguess", *map(str, arguments)],
        capture_output=True,
        text=True,
    )
    if result.returncode:
        sys.exit(
            f"tensorguess {arguments[0]} failed ({result.returncode}): {result.stderr[-2000:]}"
        )
    return result, time.monotonic() - started


def photos_of(dataset: Path) -> tuple[list[str], list[tuple[Path, str]]]:
    """The labels of a dataset laid out as <label>/<photo>, and its (photo, label) pairs."""
    labels = sorted(folder.name for folder in dataset.iterdir() if folder.is_dir())
    return labels, [
        (path, label)
        for label in labels
        for path in sorted((dataset / label).iterdir())
        if path.is_file()
    ]


def flipped_labels(count: int, labels: int, seed: int, share: float = FLIPPED) -> dict[int, int]:
    """Which of `count` photos get another label, and which (an offset of 1 to labels - 1)."""
    rng = random.Random(seed)
    return {row: rng.randrange(1, labels) for row in rng.sample(range(count), round(share * count))}


def flipped_folder(root: Path, dataset: Path, seed: int, photos: int = 0) -> dict[str, str]:
    """Symlinks to the photos of `dataset` under root/data/<label>/, FLIPPED of them under a
    wrong label (drawn with `seed`); `photos` > 0 keeps that many (every label alike).
    {flipped photo's path under root: its true label}."""
    labels, files = photos_of(dataset)
    if photos:
        files = random.Random(seed).sample(files, photos)
    flips = flipped_labels(len(files), len(labels), seed)
    wrong = {}
    for row, (path, label) in enumerate(files):
        given = labels[(labels.index(label) + flips.get(row, 0)) % len(labels)]
        target = root / "data" / given / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path)
        if row in flips:
            wrong[str(target)] = label
    return wrong


def spread(values: list[float]) -> str:
    """Mean, standard deviation and range of per-seed figures."""
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} +- {deviation:.3f} ({min(values):.3f}-{max(values):.3f})"


def measure_labels(dataset: str, seeds: list[int], photos: int, work: Path) -> None:
    rows, looked_at = [], []
    for seed in seeds:
        tf_files = work / f"{dataset}-seed{seed}"
        if tf_files.exists():
            sys.exit(f"{tf_files} exists: remove it or give another --work")
        wrong = flipped_folder(tf_files, LABELLED[dataset], seed, photos)
        arguments = ("doctor", tf_files, "--json", "--bottleneck_dir", work / "bottlenecks")
        _, first = tensorguess(*arguments)
        result, warm = tensorguess(*arguments)
        issues = json.loads(result.stdout)["label_issues"]
        listed = {issue["path"] for issue in issues}
        found = len(listed & set(wrong))
        recall, precision = found / len(wrong), found / max(len(listed), 1)
        rows.append((recall, precision, len(listed)))
        total = sum(1 for path in (tf_files / "data").rglob("*") if path.is_file())
        print(
            f"{dataset} seed {seed}: {len(wrong)} flipped of {total}, {len(listed)} listed, "
            f"recall {recall:.3f}, precision {precision:.3f}; doctor {first:.1f} s, then "
            f"{warm:.1f} s on a warm cache",
            flush=True,
        )
        for issue in issues:
            if issue["path"] not in wrong:
                where = Path(issue["path"]).resolve()
                looked_at.append(
                    f"{seed}\t{where}\t{issue['label']}\t{issue['suggested']}\t{issue['wrong']:.3f}"
                )
    print(f"{dataset}: recall {spread([row[0] for row in rows])}")
    print(f"{dataset}: precision {spread([row[1] for row in rows])}")
    print(f"{dataset}: listed {spread([float(row[2]) for row in rows])}")
    table = work / f"{dataset}-not-flipped.tsv"
    table.write_text("seed\tphoto\tlabel\tsuggested\twrong\n" + "\n".join(looked_at) + "\n")
    print(f"listed but not flipped: {table}")


def dataset_features(dataset: str, work: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """The features doctor checks `dataset` on (computed into WORK/bottlenecks if missing),
    its true labels as indices, and how many labels."""
    from tensorguess.quality.doctor import folder_features

    tf_files = work / f"{dataset}-as-it-is"
    if not tf_files.exists():
        (tf_files / "data").mkdir(parents=True)
        for label in photos_of(LABELLED[dataset])[0]:
            (tf_files / "data" / label).symlink_to(LABELLED[dataset] / label)
    found = folder_features(tf_files, bottleneck_dir=work / "bottlenecks")
    truth = np.array([found.labels.index(image.label) for image in found.images])
    return found.vectors, truth, len(found.labels)


def _flipped(truth: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(given labels, which were flipped) for true labels, drawn as `labels` flips them."""
    given = truth.copy()
    for row, offset in flipped_labels(len(truth), count, seed).items():
        given[row] = (truth[row] + offset) % count
    return given, given != truth


def _lda_noise(shrinkage: float, folds: int) -> Callable:
    def wrong(features, given, count):
        from tensorguess.quality import photo_statistics

        kept = photo_statistics.SHRINKAGE
        photo_statistics.SHRINKAGE = shrinkage
        try:
            return photo_statistics.label_noise(features, given, count, folds).wrong
        finally:
            photo_statistics.SHRINKAGE = kept

    return wrong


def _confident_learning_on_lda(features, given, count):
    """The previous doctor: LDA on features scaled to length 1 (shrinkage 0.5, 5 folds),
    one temperature fitted without a noise model, then cleanlab's find_label_issues."""
    from cleanlab.filter import find_label_issues

    from tensorguess.features.novelty import unit_length
    from tensorguess.quality import photo_statistics

    kept = photo_statistics.SHRINKAGE
    photo_statistics.SHRINKAGE = 0.5
    try:
        # comparable() square-roots; the previous doctor did not, so undo it by squaring.
        squared = np.sign(features) * features**2
        distances = photo_statistics.out_of_fold_distances(unit_length(squared), given, count, 5)
    finally:
        photo_statistics.SHRINKAGE = kept
    best, best_loss = 1.0, np.inf
    for temperature in photo_statistics.TEMPERATURES:
        logits = -0.5 * distances / temperature
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        loss = -np.log(probabilities[np.arange(len(given)), given] + 1e-12).mean()
        if loss < best_loss:
            best, best_loss = temperature, loss
    logits = -0.5 * distances / best
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return find_label_issues(given, probabilities, n_jobs=1).astype(float)


def _logistic_regression(strength: float) -> Callable:
    def wrong(features, given, count):
        from sklearn.linear_model import LogisticRegression

        from tensorguess.quality import photo_statistics

        scaled = photo_statistics.comparable(features)
        fold, folds = photo_statistics.fold_numbers(len(given), 5)
        logits = np.full((len(given), count), -1e9)
        for held_out in range(folds):
            rows = fold == held_out
            model = LogisticRegression(C=strength, max_iter=3000).fit(scaled[~rows], given[~rows])
            logits[np.ix_(rows, model.classes_)] = model.decision_function(scaled[rows])
        return photo_statistics.fit_label_noise(-2 * logits, given, priors=False).wrong

    return wrong


def compare(dataset: str, seeds: list[int], work: Path) -> None:
    from tensorguess.features.novelty import one_blas_thread

    features, truth, count = dataset_features(dataset, work)
    methods = {
        "LDA 0.8, 10 folds, noise model (doctor)": _lda_noise(0.8, 10),
        "LDA 0.8, 5 folds, noise model": _lda_noise(0.8, 5),
        "LDA 0.5, 10 folds, noise model": _lda_noise(0.5, 10),
        "LDA 0.9, 10 folds, noise model": _lda_noise(0.9, 10),
        "logistic regression C=1, 5 folds, noise model": _logistic_regression(1.0),
        "logistic regression C=10, 5 folds, noise model": _logistic_regression(10.0),
        "previous doctor: LDA 0.5, 5 folds, confident learning": _confident_learning_on_lda,
    }
    for name, method in methods.items():
        figures: dict[float, list[tuple[float, float, int]]] = {}
        seconds = []
        for seed in seeds:
            given, flipped = _flipped(truth, count, seed)
            started = time.monotonic()
            with one_blas_thread():
                wrong = method(features, given, count)
            seconds.append(time.monotonic() - started)
            cuts = (0.5,) if name.startswith("previous") else (0.25, 0.35, 0.5)
            for cut in cuts:
                listed = wrong >= cut
                found = int((listed & flipped).sum())
                figures.setdefault(cut, []).append(
                    (found / flipped.sum(), found / max(listed.sum(), 1), int(listed.sum()))
                )
        for cut, rows in figures.items():
            print(
                f"{dataset} | {name} | cut {cut} | recall {spread([row[0] for row in rows])} | "
                f"precision {spread([row[1] for row in rows])} | listed "
                f"{statistics.mean(row[2] for row in rows):.0f} | {statistics.mean(seconds):.1f} s",
                flush=True,
            )


def measure_multilabel(dataset: str, seeds: list[int], work: Path) -> None:
    from tensorguess.features.novelty import one_blas_thread
    from tensorguess.quality.photo_statistics import LISTED, missing_and_extra_labels

    features, truth, count = dataset_features(dataset, work)
    for seed in seeds:
        rng = np.random.default_rng(seed)
        first, second = rng.permutation(len(truth)), rng.permutation(len(truth))
        apart = truth[first] != truth[second]
        first, second = first[apart], second[apart]
        pairs = (np.sqrt(features[first]) + np.sqrt(features[second])) ** 2
        has = np.zeros((len(first), count), bool)
        has[np.arange(len(first)), truth[first]] = True
        has[np.arange(len(first)), truth[second]] = True
        given = has.copy()
        present, absent = np.argwhere(has), np.argwhere(~has)
        changes = round(FLIPPED * len(present))
        for cells, value in ((present, False), (absent, True)):
            chosen = cells[rng.choice(len(cells), changes, replace=False)]
            given[chosen[:, 0], chosen[:, 1]] = value
        started = time.monotonic()
        with one_blas_thread():
            found = missing_and_extra_labels(pairs, given)
        seconds = time.monotonic() - started
        listed = found.wrong >= LISTED
        parts = []
        for kind, wrong, mine in (
            ("missing", has & ~given, listed & ~given),
            ("extra", ~has & given, listed & given),
        ):
            right = int((mine & wrong).sum())
            parts.append(
                f"{kind}: {int(wrong.sum())}, listed {int(mine.sum())}, recall "
                f"{right / wrong.sum():.3f}, precision {right / max(mine.sum(), 1):.3f}"
            )
        print(
            f"{dataset} two-label seed {seed} ({len(first)} photos): {'; '.join(parts)}; "
            f"fitted rates {found.missing_rate:.3f} missing, {found.extra_rate:.4f} extra; "
            f"{seconds:.1f} s",
            flush=True,
        )


def measure_unknown(preset: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        tf_files = scratch / "tf_files"
        (tf_files / "data").mkdir(parents=True)
        for folder in (SUPERHEROES / "train").iterdir():
            (tf_files / "data" / folder.name).symlink_to(folder, target_is_directory=True)
        _, seconds = tensorguess("train", tf_files, "--preset", preset, "--no_report")
        threshold = json.loads((tf_files / "tensorguess.json").read_text())["novelty"]
        print(f"trained ({preset}) in {seconds:.0f} s; novelty {threshold}")
        mixed = scratch / "mixed"
        mixed.mkdir()
        heroes = sorted((SUPERHEROES / "test_data").iterdir())
        hands = sorted(SIGN_DIGITS.rglob("*.JPG"))
        for path in heroes:
            (mixed / f"hero-{path.name}").symlink_to(path)
        for path in hands:
            (mixed / f"hand-{path.parent.name}-{path.name}").symlink_to(path)
        held_out = [
            image.path
            for image in scan_data(tf_files / "data", 10, 10).images
            if image.split == TEST
        ]
        for path in held_out:
            (mixed / f"heldout-{path.name}").symlink_to(path.resolve())
        result, seconds = tensorguess(
            "sort", tf_files, mixed, scratch / "sorted", "--unknown", "--json"
        )
        sorted_ = json.loads(result.stdout)["sorted"]
        unknown = {
            Path(row["source"]).name
            for row in sorted_
            if Path(row["destination"]).name.startswith("unknown-")
        }
        named = sorted(name for name in unknown if name.startswith("hero-"))
        hand_count = sum(name.startswith("hand-") for name in unknown)
        held_count = sum(name.startswith("heldout-") for name in unknown)
        print(
            f"unknown: held-out photos of superheroes/train {held_count}/{len(held_out)} "
            f"({held_count / len(held_out):.1%})"
        )
        print(
            f"unknown: hands {hand_count}/{len(hands)} ({hand_count / len(hands):.1%}), heroes "
            f"{len(named)}/{len(heroes)} ({len(named) / len(heroes):.1%}: {', '.join(named)}); "
            f"sorted in {seconds:.0f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["labels", "compare", "multilabel", "unknown"])
    parser.add_argument("--dataset", choices=sorted(LABELLED), default="clothing-extra")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--photos", type=int, default=0, help="0: all of the dataset")
    parser.add_argument("--preset", default="balanced")
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/tensorguess-doctor"), help="symlinks and cache"
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.what == "labels":
        measure_labels(args.dataset, args.seeds, args.photos, args.work)
    elif args.what == "compare":
        compare(args.dataset, args.seeds, args.work)
    elif args.what == "multilabel":
        measure_multilabel(args.dataset, args.seeds, args.work)
    else:
        measure_unknown(args.preset)


if __name__ == "__main__":
    main()
