"""`tensorguess guess` (guess.sh): label images, one line per label, best first."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tensorguess.cli.common import (
    EXIT_PROBLEM,
    add_debug_flag,
    add_model_flags,
    add_tf_files,
    command_parser,
    positive_int,
    say,
)

NAME = "guess"
# Said after the best label of a photo whose novelty score is past the model's threshold.
UNKNOWN_LINE = "(unlike every training photo)"
EPILOG = """example:
  {prog} ./tf_files photo.jpg
  elsa (score = 0.99636)
  darth_vader (score = 0.00364)

A photo unlike every training photo (its novelty score past the threshold train.sh
calibrated) gets the line "(unlike every training photo)" after its best label; --json
gives every photo's "novelty" and "unknown".

old graphs (retrain.py, TensorFlow for Poets) work too, and answer as label_image.py did;
its flags override what is detected."""


def add_parser(commands) -> argparse.ArgumentParser:
    """The guess command and its flags."""
    guess = command_parser(
        commands,
        NAME,
        help="label images with a trained classifier",
        description="Print each label with its score, best first.",
        epilog=EPILOG,
    )
    add_tf_files(guess)
    guess.add_argument(
        "images", type=Path, nargs="+", metavar="IMAGE", help="the photos to label (any format)"
    )
    guess.add_argument("--top_k", type=positive_int, help="print only the best K labels")
    guess.add_argument("--json", action="store_true", help="print JSON instead of lines")
    add_model_flags(guess)
    add_debug_flag(guess)
    guess.set_defaults(run=run, interrupted="nothing was written")
    return guess


def run(args: argparse.Namespace) -> int:
    """Label each image; exit 1 if any could not be read (the others are still labelled)."""
    from tensorguess.cli.common import load_model

    classifier = load_model(args)
    results, failures = [], 0
    for prediction in classifier.classify(args.images):
        results.append(prediction.to_json(classifier.labels, args.top_k))
        if prediction.scores is None:
            failures += 1
            say(f"tensorguess: error: {prediction.path}: {prediction.problem}")
            continue
        if not args.json:
            if len(args.images) > 1:
                print(f"{prediction.path}:")
            for rank, (label, score) in enumerate(prediction.ranked(classifier.labels, args.top_k)):
                print(f"{label} (score = {score:.5f})")
                if rank == 0 and prediction.unknown:
                    print(UNKNOWN_LINE)
    if args.json:
        print(json.dumps(results, indent=2))
    return EXIT_PROBLEM if failures else 0
