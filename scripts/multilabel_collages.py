"""Multi-label figures on collages of clothing-extra photos (docs/multilabel.md, issue 24).

    .venv/bin/python scripts/multilabel_collages.py ../shared/datasets/clothing-extra \
        [--photos 3000] [--folds 0,1,2,3,4] [--preset balanced] [--work /tmp/multilabel]

Each collage is a 400 x 534 page (the size of the photos) cut in four cells, two or three of
them holding photos of different labels, the others white; its labels are its photos'. The
split is by content, and by the photos' content, not the collages': each photo is put in a
tenth of the set by its SHA-256; for fold k, tenths 2k and 2k + 1 make the test collages,
tenth 2k + 2 the validation ones and the other seven the training ones, so no photo is both
trained on and tested on. The collages are written under WORK (read in place from DATA,
never copied into the repository), listed in TF_FILES/labels.csv, and named
`<group>_nohash_<n>.jpg`: train.sh splits names with `_nohash_` by the part before it, and
each split's group name is one train.sh puts in that split, so `bash train.sh TF_FILES`
trains and tests on exactly these splits. Prints each fold's micro-F1, mAP, exact match,
macro-F1 and train time (train.sh's wall clock), then their means and spreads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZE = (400, 534)
TENTHS = 10
SHARES = {"train": 0.7, "validation": 0.1, "test": 0.2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="photos in DATA/<label>/ (clothing-extra)")
    parser.add_argument("--photos", type=int, default=3000, help="collages per fold")
    parser.add_argument("--folds", default="0,1,2,3,4")
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--work", type=Path, default=Path("/tmp/multilabel-collages"))
    parser.add_argument("train_flags", nargs="*", help="more train.sh flags, after --")
    # Split at "--" here: argparse gives the flags after it to no positional when an option
    # (--work) comes between DATA and "--", and refuses them.
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    args.train_flags += argv[cut + 1 :]

    sources = source_photos(args.data)
    results = []
    for fold in [int(fold) for fold in args.folds.split(",")]:
        tf_files = args.work / f"fold{fold}"
        build_fold(sources, fold, args.photos, tf_files)
        started = time.monotonic()
        subprocess.run(
            ["bash", ROOT / "train.sh", tf_files, "--preset", args.preset, *args.train_flags],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        seconds = time.monotonic() - started
        metadata = json.loads((tf_files / "tensorguess.json").read_text())
        figures = {
            "micro_f1": metadata["test_micro_f1"],
            "map": metadata["test_mean_average_precision"],
            "exact_match": metadata["test_accuracy"],
            "macro_f1": metadata["test_macro_f1"],
            "test_photos": metadata["test_count"],
            "seconds": seconds,
        }
        results.append(figures)
        print(f"fold {fold}: " + ", ".join(f"{key} {value:.4g}" for key, value in figures.items()))
        sys.stdout.flush()
    if len(results) > 1:
        for key in results[0]:
            values = [result[key] for result in results]
            print(
                f"{key}: mean {statistics.mean(values):.4g}, spread (sample standard deviation) "
                f"{statistics.stdev(values):.2g}, range {min(values):.4g}-{max(values):.4g}"
            )


def source_photos(data: Path) -> dict[str, list[tuple[Path, int]]]:
    """The photos of each label folder, each with its tenth (by its content's SHA-256)."""
    photos: dict[str, list[tuple[Path, int]]] = {}
    for folder in sorted(path for path in data.iterdir() if path.is_dir()):
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
                tenth = int(hashlib.sha256(path.read_bytes()).hexdigest(), 16) % TENTHS
                photos.setdefault(folder.name, []).append((path, tenth))
    return photos


def split_of(tenth: int, fold: int) -> str:
    """The split a photo of this tenth is in for `fold`."""
    if tenth in (2 * fold % TENTHS, (2 * fold + 1) % TENTHS):
        return "test"
    if tenth == (2 * fold + 2) % TENTHS:
        return "validation"
    return "train"


def group_names() -> dict[str, str]:
    """For each split, a name that train.sh's split (default percentages) puts in it."""
    from tensorguess.data.dataset import split_for

    names: dict[str, str] = {}
    for number in range(10_000):
        name = f"group{number}"
        split = split_for(Path(f"{name}_nohash_0.jpg"), "0" * 64, 10.0, 10.0)
        names.setdefault(split, name)
        if len(names) == 3:
            return names
    raise RuntimeError("no group name for every split")


def build_fold(sources: dict[str, list[tuple[Path, int]]], fold: int, count: int, tf_files: Path):
    """TF_FILES/data/collages/*.jpg and TF_FILES/labels.csv for `fold` (kept if there)."""
    from PIL import Image, ImageOps

    listing = tf_files / "labels.csv"
    if listing.exists():
        return
    rng = random.Random(fold)
    groups = group_names()
    folder = tf_files / "data" / "collages"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["image,labels"]
    cell = (SIZE[0] // 2, SIZE[1] // 2)
    for split, share in SHARES.items():
        pool = {
            label: [path for path, tenth in photos if split_of(tenth, fold) == split]
            for label, photos in sources.items()
        }
        pool = {label: paths for label, paths in pool.items() if paths}
        for number in range(round(count * share)):
            labels = rng.sample(sorted(pool), rng.choice([2, 3]))
            cells = rng.sample(range(4), len(labels))
            page = Image.new("RGB", SIZE, "white")
            for label, place in zip(labels, cells, strict=True):
                with Image.open(rng.choice(pool[label])) as photo:
                    part = ImageOps.exif_transpose(photo).convert("RGB").resize(cell)
                page.paste(part, ((place % 2) * cell[0], (place // 2) * cell[1]))
            name = f"{groups[split]}_nohash_{number:05d}.jpg"
            page.save(folder / name, quality=90)
            lines.append(f"collages/{name},{' '.join(labels)}")
    listing.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
