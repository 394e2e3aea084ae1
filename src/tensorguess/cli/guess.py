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
# Said after the lines of a multi-label model's photo that gets no label.
NO_LABEL_LINE = "(no label over its threshold)"
EPILOG = """example:
  {prog} ./tf_files photo.jpg
  elsa (score = 0.99636)
  darth_vader (score = 0.00364)

A multi-label model (docs/multilabel.md) scores each label on its own, and marks the
labels it gives the photo, those over their thresholds (chosen by train.sh); --json gives
them as "labels":
  shirt (score = 0.93412) over threshold 0.41
  striped (score = 0.81234) over threshold 0.37
  dress (score = 0.04051)

A photo unlike every training photo (its novelty score past the threshold train.sh
calibrated) gets the line "(unlike every training photo)" after its best label; --json
gives every photo's "novelty" and "unknown".

--explain DIR writes, for each photo, where the model found the evidence for its best
label (or --explain_label's): DIR/<name>-heat.jpg, the photo with the heat map over it,
and DIR/<name>-heat-map.png, the bare map in grey (docs/explain.md).

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
    guess.add_argument(
        "--explain",
        type=Path,
        metavar="DIR",
        help="also write a heat map of each photo into DIR (created if missing): "
        "<name>-heat.jpg and <name>-heat-map.png, named in --json as heatmap",
    )
    guess.add_argument(
        "--explain_label",
        metavar="LABEL",
        help="with --explain: the label whose evidence to show (default: each photo's best)",
    )
    add_model_flags(guess)
    add_debug_flag(guess)
    guess.set_defaults(run=run, interrupted="nothing was written")
    return guess


def run(args: argparse.Namespace) -> int:
    """Label each image; exit 1 if any could not be read (the others are still labelled)."""
    from tensorguess.cli.common import load_model

    if args.explain_label is not None and args.explain is None:
        args.command_parser.error("--explain_label goes with --explain DIR")
    classifier = load_model(args)
    explainer = _explainer(classifier, args.explain_label) if args.explain else None
    predictions = classifier.classify(args.images)
    heat = {}
    if explainer is not None:  # the maps need every score first; without them, lines stream
        predictions = list(predictions)
        heat = _heat_files(explainer, classifier.labels, predictions, args)
    results, failures = [], 0
    for number, prediction in enumerate(predictions):
        explained = heat.get(number, {})
        results.append({**prediction.to_json(classifier.labels, args.top_k), **explained})
        if prediction.scores is None:
            failures += 1
            say(f"tensorguess: error: {prediction.path}: {prediction.problem}")
            continue
        if not args.json:
            if len(args.images) > 1:
                print(f"{prediction.path}:")
            given = set(prediction.labels or ())
            thresholds = classifier.task.threshold_array(len(classifier.labels))
            for rank, (label, score) in enumerate(prediction.ranked(classifier.labels, args.top_k)):
                mark = ""
                if label in given and thresholds is not None:
                    mark = f" over threshold {thresholds[classifier.labels.index(label)]:.2f}"
                print(f"{label} (score = {score:.5f}){mark}")
                if rank == 0 and prediction.unknown:
                    print(UNKNOWN_LINE)
            if prediction.labels == ():
                print(NO_LABEL_LINE)
            if explained:
                print(f"(heat map of {explained['heatmap_label']}: {explained['heatmap_overlay']})")
    if args.json:
        print(json.dumps(results, indent=2))
    return EXIT_PROBLEM if failures else 0


def _explainer(classifier, label: str | None):
    """How to explain `classifier`, checked before any photo is labelled."""
    from tensorguess.errors import InvalidOption
    from tensorguess.quality.explain import explainer_for

    if label is not None and label not in classifier.labels:
        raise InvalidOption(
            f"--explain_label {label!r}: not a label of this model ({', '.join(classifier.labels)})"
        )
    return explainer_for(classifier)


def _heat_files(explainer, labels: list[str], predictions, args: argparse.Namespace) -> dict:
    """The heat maps of the labelled photos, written into --explain's folder: what --json adds
    to each, by the prediction's place in `predictions`."""
    from tensorguess.files import make_folder
    from tensorguess.quality.explain import EXPLAIN_BATCH, explain, write_heat_files

    make_folder(args.explain)
    labelled = [number for number, found in enumerate(predictions) if found.scores is not None]
    taken: set[str] = set()
    added = {}
    for start in range(0, len(labelled), EXPLAIN_BATCH):
        batch = labelled[start : start + EXPLAIN_BATCH]
        photos = [(predictions[number].path, predictions[number].scores) for number in batch]
        for number, heat in zip(
            batch, explain(explainer, labels, photos, args.explain_label), strict=True
        ):
            files = write_heat_files(args.explain, predictions[number].path, heat, taken)
            added[number] = {
                "heatmap": str(files.map),
                "heatmap_overlay": str(files.overlay),
                "heatmap_label": heat.label,
            }
    return added
