"""`tensorguess sort` (guessDir.sh): copy every image of SRC into DEST named by its label."""

from __future__ import annotations

import argparse
import json
from contextlib import nullcontext
from pathlib import Path

from tensorguess.cli.common import (
    add_debug_flag,
    add_model_flags,
    add_ray_flags,
    add_tf_files,
    command_parser,
    load_model,
    model_overrides,
    output,
    plural,
    positive_int,
    print_skipped,
    ray_settings,
    score,
)

NAME = "sort"
INTERRUPTED = "run it again to finish (nothing is sorted twice)"
EPILOG = """examples:
  {prog} ./tf_files ~/unsorted ~/sorted
  {prog} ./tf_files /archive/unsorted /archive/sorted --ray 10.0.0.5:6379
copies ~/unsorted/IMG_0001.jpg to ~/sorted/elsa-0.99636.jpg (never overwriting:
a taken name gets -1, -2, ...) and writes ~/sorted/manifest.csv. SRC is only read
(unless --move). Run it again after new photos arrive, or after an interrupted run:
what the manifest lists is not sorted twice. With --ray, Ray workers classify (SRC on
storage every node shares) and this machine copies, with the same guarantees.

A multi-label model (docs/multilabel.md) puts each photo in the folder of every label it
gives it, ~/sorted/<label>/<label>-<score>.jpg (one copy, hard-linked into each folder, or
copied where the file system has no hard links), and a photo with none in
~/sorted/untagged/; manifest.csv lists each photo once, with its labels and every name."""


def add_parser(commands) -> argparse.ArgumentParser:
    """The sort command and its flags."""
    sort = command_parser(
        commands,
        NAME,
        help="sort a folder of images into DEST by label (guessDir.sh)",
        description="Classify every image in SRC and copy it into DEST as <label>-<score>.<ext>.",
        epilog=EPILOG,
    )
    add_tf_files(sort)
    sort.add_argument(
        "source",
        type=Path,
        metavar="SRC",
        help="the folder of images to sort (its top level; only read, unless --move)",
    )
    sort.add_argument(
        "destination",
        type=Path,
        metavar="DEST",
        help="where the renamed copies and manifest.csv go (created if missing)",
    )
    sort.add_argument("--batch_size", type=positive_int, default=64, help="default 64")
    sort.add_argument(
        "--move",
        action="store_true",
        help="delete each source once its copy in DEST is verified (size and SHA-256)",
    )
    sort.add_argument(
        "--min_score",
        type=score,
        default=0.0,
        help="name images whose best score is under this unsure-<label>-<score>.<ext> "
        "(0-1, default 0; single-label models)",
    )
    sort.add_argument(
        "--unknown",
        action="store_true",
        help="name images unlike every training photo (their novelty score past the "
        "threshold train.sh calibrated) unknown-<label>-<score>.<ext>",
    )
    sort.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    add_model_flags(sort)
    add_ray_flags(sort, "classify")
    add_debug_flag(sort)
    sort.set_defaults(run=run, interrupted=INTERRUPTED)
    return sort


def run(args: argparse.Namespace) -> int:
    """Sort, then say what went where and what was skipped."""
    from tensorguess.classify.sort import sort_folder

    settings, cluster = ray_settings(args), None
    if settings is not None:  # checked first: Ray installed, its address answering
        from tensorguess.classify.cluster.connection import RayCluster

        cluster = RayCluster(settings, f"nothing is lost; {INTERRUPTED}")
    classifier = load_model(args)
    with cluster or nullcontext():  # connected on the first photo to classify, left at the end
        if cluster is not None:
            from tensorguess.classify.cluster.workers import ClusterClassifier

            overrides = model_overrides(args)
            classifier = ClusterClassifier(cluster, classifier, overrides, args.engine)
        report = sort_folder(
            classifier,
            args.source,
            args.destination,
            args.batch_size,
            move=args.move,
            min_score=args.min_score,
            unknown=args.unknown,
        )
    say = output(args.json)
    by_label = ", ".join(f"{label} {count}" for label, count in report.counts().items())
    say(
        f"Sorted {plural(len(report.copied), 'image')} into {args.destination} "
        f"({by_label or 'none'})"
    )
    if report.unsure:
        say(f"Unsure (best score under {args.min_score}): {report.unsure}, named unsure-*")
    if args.unknown:
        say(f"Unlike every training photo: {report.unknown}, named unknown-*")
    if report.already_sorted:
        say(f"Already sorted by an earlier run: {len(report.already_sorted)}")
    if args.move:
        say(f"Removed from {args.source} after verifying their copies: {report.moved}")
    say(f"Manifest: {report.manifest}")
    print_skipped([(str(path), reason) for path, reason in report.skipped], say)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    return 0
