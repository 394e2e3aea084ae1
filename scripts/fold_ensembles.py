"""Test-time views and ensembles, measured on the scores scripts/clothing_folds.py saved.

    .venv/bin/python scripts/fold_ensembles.py SCORES [SCORES ...] \
        [--views plain,mirror] [--largest 3]

Each SCORES folder holds one run's test scores, fold by fold (`clothing_folds.py --save`),
all runs on the same partition into folds. For every group of up to --largest runs, it
prints the accuracy of the summed scores of the --views of each run (every view the runs
saved: plain, mirror, crop90, crop90_mirror, crop80, crop80_mirror, scale115,
scale115_mirror), fold by fold, and their mean with its spread (sd over the folds). Only the
folds every run saved count.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", metavar="SCORES")
    parser.add_argument("--views", default="plain,mirror", help="comma-separated, summed")
    parser.add_argument("--largest", type=int, default=3, help="most runs in an ensemble")
    args = parser.parse_args()
    views = args.views.split(",")
    runs = {run: _folds(run) for run in args.runs}
    folds = sorted(set.intersection(*(set(saved) for saved in runs.values())))
    if not folds:
        parser.error("no fold is saved in every SCORES folder")
    first = runs[args.runs[0]]
    for run, saved in runs.items():
        for fold in folds:
            if not np.array_equal(saved[fold]["rows"], first[fold]["rows"]):
                parser.error(f"{run} has other test photos in fold {fold}: another partition")
            missing = [view for view in views if view not in saved[fold]]
            if missing:
                parser.error(f"{run} fold {fold} has no {', '.join(missing)} scores")
    print(f"{len(folds)} folds ({', '.join(map(str, folds))}), views {' + '.join(views)}")
    for size in range(1, min(args.largest, len(runs)) + 1):
        for group in itertools.combinations(args.runs, size):
            accuracies = [
                float(
                    (
                        sum(runs[run][fold][view] for run in group for view in views).argmax(1)
                        == first[fold]["labels"]
                    ).mean()
                )
                * 100
                for fold in folds
            ]
            print(
                f"{' + '.join(run.name for run in group):40s} {np.mean(accuracies):5.1f}% "
                f"+- {np.std(accuracies):.1f}  ({', '.join(f'{a:.1f}' for a in accuracies)})"
            )


def _folds(run: Path) -> dict[int, dict[str, np.ndarray]]:
    """The scores saved in `run`, by fold."""
    numbers = {file: file.stem.removeprefix("fold") for file in run.glob("fold*.npz")}
    # A run stopped while saving leaves fold<k>.partial.npz: not a fold.
    return {int(k): dict(np.load(file)) for file, k in sorted(numbers.items()) if k.isdigit()}


if __name__ == "__main__":
    main()
