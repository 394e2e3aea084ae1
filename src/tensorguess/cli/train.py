"""`tensorguess train` (train.sh): its arguments, made from the settings table, and its runner."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tensorguess.cli.common import (
    add_debug_flag,
    add_engine_flag,
    add_ray_flags,
    command_parser,
    output,
    print_skipped,
    ray_settings,
)
from tensorguess.cli.export import FORMAT_NAMES, add_format_flag
from tensorguess.features.engines import ENGINE_HELP_TRAIN
from tensorguess.training.options import FLAGS, Flag, OneOf
from tensorguess.training.presets import DEFAULT_PRESET, PRESET_HELP, PRESETS, preset_values

NAME = "train"
EPILOG = """examples:
  {prog} ./tf_files          # photos in ./tf_files/data/<label>/
  {prog} ./tf_files --preset fast
  {prog} ./tf_files --preset best --summaries_dir /tmp/tensorboard
  {prog} ./tf_files --export tflite,tflite-int8    # then the files for phones
  {prog} ./tf_files --ray 10.0.0.5:6379   # features computed on a Ray cluster
  {prog} ./tf_files --multi_label  # a photo in several data/<label>/ folders has each label

multi-label (any number of labels per photo, none included): TF_FILES/labels.csv with the
header image,labels (image: a path under data/; labels separated by spaces; an empty cell
for a photo with none), or --multi_label with each photo in the folder of every label it
has (data/untagged/ for none). The log's first line says which mode it trains in and why.
docs/multilabel.md.

writes into TF_FILES: retrained_graph.pb, retrained_labels.txt, saved_model/,
tensorguess.json, report.html (with training_curves.png and confusion_matrix.png), and
the feature cache bottlenecks/ (safe to delete); with --export, TF_FILES/export/ too
(docs/export.md). Measured presets: docs/accuracy.md."""
GROUPS = {
    None: None,
    "head": "the classifier head (trained on cached features)",
    "distortions": "distortions (retrain.py's, off unless set): the head learns from distorted "
    "views of each training photo, computed once and cached; fine-tuning distorts every step",
    "fine_tune": "fine-tuning: the feature cache cannot serve it; the frozen blocks run once on "
    "every photo, then each epoch trains the top blocks (with distortions, every epoch runs "
    "the whole backbone on every training photo); efficientnet_lite backbones only",
}


def add_parser(commands) -> argparse.ArgumentParser:
    """The train command and its flags."""
    train = command_parser(
        commands,
        NAME,
        help="train a classifier on TF_FILES/data/<label>/",
        description="Train a classifier on the photos in TF_FILES/data/<label>/ "
        "(one folder per label) and write it into TF_FILES.",
        epilog=EPILOG,
    )
    train.add_argument(
        "tf_files",
        type=Path,
        metavar="TF_FILES",
        help="the folder with your photos in data/<label>/; the classifier is written there",
    )
    train.add_argument(
        "--preset",
        choices=list(PRESETS),
        default=DEFAULT_PRESET,
        help="; ".join(f"{name}: {text}" for name, text in PRESET_HELP.items())
        + ". Any flag below overrides its preset's value.",
    )
    groups = {
        section: train.add_argument_group(title) if title else train
        for section, title in GROUPS.items()
    }
    for flag in FLAGS.values():
        _add_flag(groups[flag.section], flag)
    train.add_argument(
        "--no_report",
        action="store_true",
        help="skip report.html and its PNG figures (saves a few seconds; a report from an "
        "earlier run is left as it was)",
    )
    add_format_flag(
        train,
        "F[,F...]",
        "then export the classifier into TF_FILES/export in these formats, as `tensorguess "
        f"export` does: {FORMAT_NAMES}",
        flag="--export",
    )
    train.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    add_engine_flag(train, ENGINE_HELP_TRAIN)
    add_ray_flags(train, "compute the features missing from the cache")
    add_debug_flag(train)
    train.set_defaults(run=run, interrupted="the previous model and the cache are intact")
    return train


def _add_flag(group, flag: Flag) -> None:
    defaults = _defaults(flag)
    text = f"{flag.help} ({defaults})" if defaults else flag.help
    if flag.kind is bool:
        group.add_argument(f"--{flag.name}", action=argparse.BooleanOptionalAction, help=text)
    elif isinstance(flag.check, OneOf):
        group.add_argument(f"--{flag.name}", choices=flag.check.choices, help=text)
    elif flag.check is None:  # a path or a name: the stage that uses it checks it
        group.add_argument(f"--{flag.name}", type=flag.kind, help=text)
    else:
        group.add_argument(f"--{flag.name}", type=_checked(flag), help=text)


def _defaults(flag: Flag) -> str:
    """How the presets set a flag, for --help: "default 0.005" or "preset fast: ..."."""
    values = preset_values(flag.name)
    if len(set(map(str, values.values()))) == 1:
        shown = values[DEFAULT_PRESET]
        return "" if shown is None else f"default {shown}"
    return "preset " + ", ".join(
        f"{preset}: {'default' if value is None else value}" for preset, value in values.items()
    )


def _checked(flag: Flag):
    """An argparse type that converts the text and applies the setting's own check."""

    def parse(text: str):
        value = flag.kind(text)
        problem = flag.check.problem(value) if flag.check else None
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = flag.kind.__name__  # "invalid int value: 'x'"
    return parse


def run(args: argparse.Namespace) -> int:
    """Train, print the summary; the settings are checked before anything else happens."""
    from tensorguess.training.pipeline import train_classifier
    from tensorguess.training.presets import preset_options

    given = {name: getattr(args, name) for name in FLAGS if getattr(args, name) is not None}
    if args.no_report:
        given["report"] = False
    if args.engine:
        given["engine"] = args.engine
    if args.ray is not None or args.ray_workers is not None:
        given["ray"] = ray_settings(args)
    options = preset_options(args.preset, **given)
    if args.export:
        from tensorguess.export.formats import require_runtimes

        require_runtimes(args.export)  # installed (once) before training, not after
    # With --json, standard output holds the JSON alone; the progress lines go to stderr.
    report = output(args.json)
    summary = train_classifier(args.tf_files, options, report)
    print_skipped(summary.skipped, report)
    report(f"Wrote {', '.join(summary.outputs)} in {summary.seconds:.1f} s")
    exported = []
    if args.export:
        from tensorguess.export.formats import export_formats

        exported = export_formats(args.tf_files, args.export, say=report)
    if args.json:
        print(
            json.dumps({**summary.to_json(), "exported": [e.to_json() for e in exported]}, indent=2)
        )
    return 0
