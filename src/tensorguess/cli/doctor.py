"""`tensorguess doctor`: likely mislabelled photos (or missing and extra labels of multi-label
photos), near-duplicates, outliers, label counts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tensorguess.cli.common import (
    add_debug_flag,
    add_engine_flag,
    command_parser,
    output,
    print_skipped,
    score,
)
from tensorguess.quality.doctor import NEAR_DUPLICATE

NAME = "doctor"
EPILOG = """examples:
  {prog} ./tf_files
  {prog} ./tf_files --json > checkup.json
  {prog} ./tf_files --report checkup.html     # with thumbnails
  {prog} ./tf_files --multi_label             # a photo in several data/<label>/ folders

It only reads: nothing in TF_FILES/data is moved or changed. It uses the feature cache
(TF_FILES/bottlenecks; missing features are computed first), so it takes seconds once
train.sh has run; without a trained model it uses the default backbone.

Multi-label photos (TF_FILES/labels.csv, or --multi_label, or a model trained so) are
checked label by label: doctor lists the labels a photo likely has but is not given
(missing) and those it is given but likely lacks (extra)."""


def add_parser(commands) -> argparse.ArgumentParser:
    """The doctor command and its flags."""
    doctor = command_parser(
        commands,
        NAME,
        help="find likely mislabelled photos, near-duplicates and outliers in TF_FILES/data",
        description="Check the photos in TF_FILES/data/<label>/: photos whose label looks "
        "wrong (with the likely one; for multi-label photos, labels likely missing or extra), "
        "near-duplicates within and across labels (and those that straddle train and test), "
        "photos far from every label, and label counts.",
        epilog=EPILOG,
    )
    doctor.add_argument(
        "tf_files",
        type=Path,
        metavar="TF_FILES",
        help="the folder with your photos in data/<label>/ (and the model, if trained)",
    )
    doctor.add_argument("--json", action="store_true", help="print JSON instead of lines")
    doctor.add_argument(
        "--report", type=Path, help="also write this HTML page, with thumbnails of every finding"
    )
    doctor.add_argument(
        "--near_duplicate",
        type=score,
        default=NEAR_DUPLICATE,
        help="cosine similarity of features from which two photos are near-duplicates "
        f"(0-1, default {NEAR_DUPLICATE})",
    )
    doctor.add_argument(
        "--bottleneck_dir",
        type=Path,
        help="the feature cache, if train.sh was given one (default TF_FILES/bottlenecks)",
    )
    doctor.add_argument(
        "--multi_label",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="photos may have any number of labels: one photo in several data/<label>/ "
        "folders has each (data/untagged/: none). Default: as the model was trained, else "
        "multi-label when TF_FILES/labels.csv exists; --no-multi_label ignores labels.csv",
    )
    from tensorguess.features.engines import ENGINE_HELP

    add_engine_flag(doctor, f"{ENGINE_HELP}. Default: the precision the model was trained in")
    add_debug_flag(doctor)
    doctor.set_defaults(run=run, interrupted="nothing in TF_FILES/data was changed")
    return doctor


def run(args: argparse.Namespace) -> int:
    """Check the photos, print the findings, write the page if asked."""
    from tensorguess.quality.doctor import check_folder

    say = output(args.json)
    checkup = check_folder(
        args.tf_files,
        args.engine,
        args.bottleneck_dir,
        args.near_duplicate,
        say=say,
        multi_label=args.multi_label,
    )
    for line in checkup.summary_lines():
        say(line)
    if args.report:
        from tensorguess.quality.report import write_report

        title = f"tensorguess doctor: {args.tf_files.resolve().name}"
        facts = [("photos", str(args.tf_files / "data"))]
        write_report(args.report, title, facts, None, save_figures=False, checkup=checkup)
        say(f"Report: {args.report}")
    print_skipped(checkup.skipped, say)
    if args.json:
        print(json.dumps(checkup.to_json(), indent=2))
    return 0
