"""Fine-tuning settings measured by 5-fold cross-validation (docs/accuracy.md, issue 15).

    .venv/bin/python scripts/clothing_folds.py ../shared/datasets/clothing-extra \
        --backbone efficientnet_lite2 --blocks 4 --epochs 6 [--flip_average] \
        [--mixup 0.2] [--flip_left_right] [--random_crop 10 --random_scale 15 \
        --random_brightness 15] [--augment trivial] [--class_weights none] \
        [--no-fine_tune_on_validation] [--partition 1] [--seed 1] [--save SCORES] \
        [--test_views] [--verbose]

Each fold holds out a fifth of the photos (by a hash of their content) for the test, an
eighth of the rest for validation, and trains on the remainder: the head on cached features,
then fine-tuning as `train.sh` does it. Prints each fold's test accuracy and the mean with
its spread. Features are cached in WORK (default /tmp/tensorguess-folds), and so is the
frozen blocks' output of every photo (and of its mirror image, for --flip_average), which
every fold and every later run with the same backbone, size and blocks reuses.

`--save SCORES` keeps each fold's test scores (SCORES/fold<k>.npz: the test photos' `rows`
and `labels`, the scores of the `plain` photos and, with --flip_average, of their `mirror`
images; with --test_views also of views that test-time augmentation could average: the
middle 90% and 80% of each photo enlarged back to the network's size, the photo at 1.15
times the size, each with its mirror image). scripts/fold_ensembles.py combines them.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np

FOLDS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="photos in DATA/<label>/")
    parser.add_argument("--backbone", default="efficientnet_lite2")
    parser.add_argument("--image_size", type=int, help="default: the backbone's own")
    parser.add_argument("--blocks", type=int, default=4, help="0: the head alone")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--learning_rate", type=float, default=3e-4)
    parser.add_argument("--label_smoothing", type=float, default=0.1)
    parser.add_argument(
        "--class_weights", default="balanced", choices=("balanced", "none"), help="train's flag"
    )
    parser.add_argument("--flip_average", action="store_true", help="test-time mirror average")
    parser.add_argument("--mixup", type=float, default=0.0, help="fine-tuning's mixup alpha")
    parser.add_argument(
        "--flip_left_right", action="store_true", help="fine-tune on mirror images too"
    )
    for name in ("random_crop", "random_scale", "random_brightness"):
        parser.add_argument(
            f"--{name}",
            type=float,
            default=0.0,
            help="percent; fine-tuning distorts every training photo afresh (train's flag)",
        )
    parser.add_argument(
        "--augment",
        default="none",
        choices=("none", "trivial"),
        help="train's --fine_tune_augment: trivial changes every training photo by one "
        "random operation each epoch (TrivialAugment)",
    )
    parser.add_argument(
        "--fine_tune_on_validation",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fine-tune on the validation photos too, keeping the last epoch (train's default)",
    )
    parser.add_argument(
        "--partition",
        default="0",
        help="which split into folds (a salt of the photos' hashes; docs/accuracy.md uses 0)",
    )
    parser.add_argument("--folds", default="0,1,2,3,4")
    parser.add_argument("--seed", type=int, default=0, help="the head's and fine-tuning's")
    parser.add_argument("--save", type=Path, metavar="SCORES", help="keep each fold's scores")
    parser.add_argument(
        "--test_views", action="store_true", help="--save the scores of crops and a scale too"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/tensorguess-folds"))
    parser.add_argument(
        "--verbose", action="store_true", help="print the head's and fine-tuning's epochs"
    )
    args = parser.parse_args()
    if args.flip_average and not args.blocks:
        parser.error("--flip_average averages the fine-tuned model's scores: give --blocks")
    if args.test_views and not (args.blocks and args.save):
        parser.error("--test_views saves the fine-tuned model's scores: give --blocks and --save")
    folds = [int(f) for f in args.folds.split(",")]
    taken = [f"fold{f}.npz" for f in folds if args.save and (args.save / f"fold{f}.npz").exists()]
    if taken:
        parser.error(f"{args.save} already holds {', '.join(taken)}: give another --save folder")

    from tensorguess.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    import tensorflow as tf

    from tensorguess.data.dataset import scan_data
    from tensorguess.features.backbones import get_backbone
    from tensorguess.features.bottlenecks import cached_features
    from tensorguess.features.boundaries import (
        StoredBoundaries,
        bottom_runner,
        split_backbone,
        store_boundaries,
    )
    from tensorguess.training.fine_tune import LabelledPaths, fine_tune
    from tensorguess.training.head import SplitData, train_head
    from tensorguess.training.options import DistortionOptions, FineTuneOptions, HeadOptions

    scan = scan_data(args.data, 0, 0)
    index = {label: i for i, label in enumerate(scan.labels)}
    labels = np.array([index[image.label] for image in scan.images])
    paths = [image.path for image in scan.images]

    def fold_of(digest: str, salt: str) -> int:
        return int(hashlib.sha256(f"{salt}:{digest}".encode()).hexdigest(), 16)

    pretrained = get_backbone(args.backbone, args.image_size)
    features = cached_features(
        pretrained, paths, args.work, digests=[i.digest for i in scan.images]
    ).vectors
    photos = hashlib.sha256("".join(i.digest for i in scan.images).encode()).hexdigest()[:12]

    def boundaries(mirror: bool) -> StoredBoundaries:
        """Every photo's frozen blocks' output, kept in WORK for later runs."""
        name = f"{pretrained.cache_key}-top{args.blocks}-{photos}{'-mirror' if mirror else ''}"
        file = args.work / "boundaries" / f"{name}.npy"
        if file.exists():
            return StoredBoundaries(np.load(file, mmap_mode="r"))
        file.parent.mkdir(parents=True, exist_ok=True)
        run = bottom_runner(pretrained, args.blocks, None)
        size = pretrained.image_size
        partial = file.with_suffix(".partial.npy")
        stored = store_boundaries(run, paths, size, partial, mirror=mirror)
        stored.values.flush()
        partial.rename(file)
        return StoredBoundaries(np.load(file, mmap_mode="r"))

    def say(line: str) -> None:
        if args.verbose:
            print(line, flush=True)

    stored = boundaries(False) if args.blocks else None
    mirrored = boundaries(True) if args.blocks and args.flip_average else None
    accuracies = []
    for fold in folds:
        started = time.monotonic()
        splits: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
        for row, image in enumerate(scan.images):
            if fold_of(image.digest, args.partition) % FOLDS == fold:
                splits["test"].append(row)
            elif fold_of(image.digest, f"val{args.partition}") % 8 == 0:
                splits["validation"].append(row)
            else:
                splits["train"].append(row)
        rows = {name: np.array(indices) for name, indices in splits.items()}
        # The pretrained weights again, each fold.
        backbone = get_backbone(args.backbone, args.image_size)
        head_options = HeadOptions(
            label_smoothing=args.label_smoothing, class_weights=args.class_weights
        )
        head = train_head(
            *(SplitData(features[rows[n]], labels[rows[n]]) for n in rows),
            len(scan.labels),
            head_options,
            seed=args.seed,
            say=say,
        )
        if args.blocks:
            head = fine_tune(
                backbone,
                head,
                head_options,
                *(
                    LabelledPaths([paths[i] for i in rows[n]], labels[rows[n]], rows[n])
                    for n in rows
                ),
                DistortionOptions(
                    flip_left_right=args.flip_left_right,
                    random_crop=args.random_crop,
                    random_scale=args.random_scale,
                    random_brightness=args.random_brightness,
                ),
                FineTuneOptions(
                    blocks=args.blocks,
                    epochs=args.epochs,
                    learning_rate=args.learning_rate,
                    mixup=args.mixup,
                    augment=args.augment,
                    on_validation=args.fine_tune_on_validation,
                ),
                seed=args.seed,
                say=say,
                stored=stored,
            )
            scores = head.test_scores
            saved = {"plain": scores}
            if mirrored is not None:
                _, top = split_backbone(backbone, args.blocks)
                tuned = np.concatenate(
                    [
                        top(tf.constant(mirrored.values[rows["test"][start : start + 64]]))
                        for start in range(0, len(rows["test"]), 64)
                    ]
                )
                saved["mirror"] = head.probabilities(tuned)
                scores = (scores + saved["mirror"]) / 2
            if args.test_views:
                test_paths = [paths[i] for i in rows["test"]]
                saved.update(test_view_scores(backbone, head, test_paths, args.backbone))
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                partial = args.save / f"fold{fold}.partial.npz"  # whole or not at all
                np.savez(partial, rows=rows["test"], labels=labels[rows["test"]], **saved)
                partial.rename(args.save / f"fold{fold}.npz")
        else:
            scores = head.probabilities(features[rows["test"]])
        accuracy = float((scores.argmax(1) == labels[rows["test"]]).mean())
        accuracies.append(accuracy)
        print(f"fold {fold}: {100 * accuracy:.1f}% ({time.monotonic() - started:.0f} s)")
    print(
        f"mean {100 * np.mean(accuracies):.1f}%, spread (sd over folds) "
        f"{100 * np.std(accuracies):.1f} points, {len(accuracies)} folds"
    )


def test_view_scores(backbone, head, paths: list[Path], name: str) -> dict[str, np.ndarray]:
    """The fine-tuned model's scores of other views of `paths`: the middle 90% and 80% of
    each photo (the photo resized larger, its middle cut out), the photo at 1.15 times the
    size (the same weights in a network built for it), each also mirrored."""
    import tensorflow as tf

    from tensorguess.data.images import pixel_batches
    from tensorguess.features.backbones import get_backbone

    size = backbone.image_size
    larger = get_backbone(name, round(size * 1.15))
    larger.model.set_weights(backbone.model.get_weights())
    views = {
        "crop90": (backbone, round(size / 0.9)),
        "crop80": (backbone, round(size / 0.8)),
        "scale115": (larger, larger.image_size),
    }
    scores = {}
    for view, (network, loaded) in views.items():
        plain, mirror = [], []
        cut = (loaded - network.image_size) // 2
        for pixels, _ in pixel_batches(paths, loaded, 32):
            middle = pixels[:, cut : cut + network.image_size, cut : cut + network.image_size]
            batch = tf.constant(middle.astype(np.float32))
            plain.append(network.features(batch).numpy())
            mirror.append(network.features(batch[:, :, ::-1]).numpy())
        scores[view] = head.probabilities(np.concatenate(plain))
        scores[f"{view}_mirror"] = head.probabilities(np.concatenate(mirror))
    return scores


if __name__ == "__main__":
    main()
