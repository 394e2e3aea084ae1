"""`tensorguess evaluate`: measure a trained classifier on photos filed by label."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tensorguess.cli.common import (
    add_debug_flag,
    add_model_flags,
    add_tf_files,
    command_parser,
    load_model,
    output,
    positive_int,
    print_skipped,
)

NAME = "evaluate"
EPILOG = """example (superheroes' 25 test photos, filed by label):
  {prog} ./tf_files ~/checked_photos --report ~/checked.html
  Accuracy = 100.0% (N=25)
  label        precision  recall     F1  photos
  darth_vader      1.000   1.000  1.000       9
  elsa             1.000   1.000  1.000      16
  Confusion matrix (rows: true label, columns: guessed label, in the order above):
        9     0  darth_vader
        0    16  elsa

LABELLED_DIR holds one folder per label, named as in retrained_labels.txt (one label is
enough). Misclassified photos are listed after the table, with the guessed label's score and
the true one's; a label with no photos shows a dash.

A multi-label model is measured on LABELLED_DIR/labels.csv (image,labels; image relative to
LABELLED_DIR) when there is one, else on its label folders (a photo in each folder of its
labels, untagged/ for none): micro-F1, mAP, exact match, macro-F1, each label's precision,
recall, F1, average precision and threshold, and the photos with a label wrong, worst first
(docs/multilabel.md)."""


def add_parser(commands) -> argparse.ArgumentParser:
    """The evaluate command and its flags."""
    evaluate = command_parser(
        commands,
        NAME,
        help="measure a classifier on labelled photos",
        description="Score every photo of LABELLED_DIR/<label>/ (laid out like TF_FILES/data) "
        "and print the accuracy, precision, recall and F1 per label, the confusion matrix and "
        "the misclassified photos with their scores.",
        epilog=EPILOG,
    )
    add_tf_files(evaluate)
    evaluate.add_argument(
        "labelled_dir",
        type=Path,
        metavar="LABELLED_DIR",
        help="photos whose labels you know, in LABELLED_DIR/<label>/",
    )
    evaluate.add_argument(
        "--report", type=Path, help="also write this HTML page (figures and thumbnails inside)"
    )
    evaluate.add_argument("--batch_size", type=positive_int, default=64, help="default 64")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of lines")
    add_model_flags(evaluate)
    add_debug_flag(evaluate)
    evaluate.set_defaults(run=run, interrupted="nothing was written")
    return evaluate


def run(args: argparse.Namespace) -> int:
    """Score the photos, print the table, write the page if asked."""
    from tensorguess.quality.evaluate import evaluate_folder, summary_lines

    classifier = load_model(args)
    evaluation = evaluate_folder(classifier, args.labelled_dir, args.batch_size)
    say = output(args.json)
    for line in summary_lines(evaluation):
        say(line)
    if evaluation.count and evaluation.confusion:  # multi-label has none
        say("Confusion matrix (rows: true label, columns: guessed label, in the order above):")
        for label, row in zip(evaluation.labels, evaluation.confusion, strict=True):
            say(f"  {' '.join(f'{count:5d}' for count in row)}  {label}")
    if args.report:
        from tensorguess.quality.explain import report_heat_maps
        from tensorguess.quality.report import THUMBNAIL_SIZE, miss_heat_maps, write_report

        facts = [("model", str(classifier.graph_path)), ("photos", str(args.labelled_dir))]
        title = f"tensorguess: {args.labelled_dir.resolve().name}"
        heat = report_heat_maps(classifier, evaluation.mistakes, THUMBNAIL_SIZE, say)
        misses = miss_heat_maps(classifier, evaluation.misses, say)
        write_report(
            args.report,
            title,
            facts,
            evaluation,
            save_figures=False,
            heat=heat,
            miss_heat=misses,
        )
        say(f"Report: {args.report}")
    print_skipped(evaluation.skipped, say)
    if args.json:
        print(json.dumps(evaluation.to_json(), indent=2))
    return 0
