"""Measure `tensorguess doctor` and `guessDir.sh --unknown` on the shared datasets, as
docs/accuracy.md reports them (run by hand: minutes, not a test).

  .venv/bin/python scripts/measure_doctor.py labels [--seeds 0 1 2] [--photos 0]
  .venv/bin/python scripts/measure_doctor.py unknown [--preset balanced]

`labels`: sign-digits with 5% of the labels flipped at random (a fixed seed each), laid out
as symlinks in a temporary folder (the photos are read in place); `doctor --json` runs
twice, the second time on a warm feature cache, and the flipped photos it lists are counted.
`unknown`: train on superheroes/train, then sort superheroes/test_data mixed with every
sign-digits photo and the photos of superheroes/train that training held out for testing,
with `--unknown`, and count the photos named unknown-*.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tensorguess.data.dataset import TEST, scan_data

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"
SIGN_DIGITS = DATASETS / "sign-digits" / "images"
SUPERHEROES = DATASETS / "superheroes"


def tensorguess(*arguments) -> tuple[subprocess.CompletedProcess, float]:
    """Run the command line; (the finished process, its wall time in seconds)."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "tensorguess", *map(str, arguments)],
        capture_output=True,
        text=True,
        check=True,
    )
    return result, time.monotonic() - started


def flipped_folder(root: Path, seed: int, share: float = 0.05, photos: int = 0) -> set[str]:
    """Symlinks to sign-digits under root/data/<label>/, `share` of them under a wrong label
    (drawn with `seed`); `photos` > 0 keeps that many (every label alike). The flipped paths."""
    rng = random.Random(seed)
    labels = sorted(folder.name for folder in SIGN_DIGITS.iterdir() if folder.is_dir())
    files = [(path, label) for label in labels for path in sorted((SIGN_DIGITS / label).iterdir())]
    if photos:
        files = rng.sample(files, photos)
    flipped = set(rng.sample(range(len(files)), round(share * len(files))))
    wrong = set()
    for index, (path, label) in enumerate(files):
        given = (
            rng.choice([other for other in labels if other != label]) if index in flipped else label
        )
        target = root / "data" / given / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path)
        if index in flipped:
            wrong.add(str(target))
    return wrong


def measure_labels(seeds: list[int], photos: int) -> None:
    for seed in seeds:
        with tempfile.TemporaryDirectory() as scratch:
            tf_files = Path(scratch) / "tf_files"
            wrong = flipped_folder(tf_files, seed, photos=photos)
            _, cold = tensorguess("doctor", tf_files, "--json")
            result, warm = tensorguess("doctor", tf_files, "--json")
            listed = {issue["path"] for issue in json.loads(result.stdout)["label_issues"]}
            found = len(listed & wrong)
            print(
                f"seed {seed}: {len(wrong)} flipped of {sum(1 for _ in tf_files.rglob('*.JPG'))}"
                f", {len(listed)} listed, recall {found / len(wrong):.1%}, precision "
                f"{found / max(len(listed), 1):.1%}; doctor {cold:.1f} s cold, {warm:.1f} s warm"
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
    parser.add_argument("what", choices=["labels", "unknown"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--photos", type=int, default=0, help="0: all of sign-digits")
    parser.add_argument("--preset", default="balanced")
    args = parser.parse_args()
    if args.what == "labels":
        measure_labels(args.seeds, args.photos)
    else:
        measure_unknown(args.preset)


if __name__ == "__main__":
    main()
