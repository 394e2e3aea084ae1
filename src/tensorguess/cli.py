"""The command line: parse arguments, call one stage, print. Nothing else."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from tensorguess import __version__
from tensorguess.errors import TensorguessError

EXIT_PROBLEM = 1  # a problem with the input, named in one line
EXIT_USAGE = 2  # argparse's code for a bad command line
EXIT_BUG = 3  # an unexpected error: a bug, shown in full with --debug
EXIT_INTERRUPTED = 130

EPILOG_TRAIN = """example:
  tensorguess train ./tf_files          # photos in ./tf_files/data/<label>/
  tensorguess train ./tf_files --hidden_units 256 --dropout 0.3

writes into TF_FILES: retrained_graph.pb, retrained_labels.txt, saved_model/,
tensorguess.json, and the feature cache bottlenecks/ (safe to delete)."""

EPILOG_GUESS = """example:
  tensorguess guess ./tf_files photo.jpg
  elsa (score = 0.99636)
  darth_vader (score = 0.00364)

old graphs (retrain.py, TensorFlow for Poets) work too; label_image.py's flags
override what is detected."""

EPILOG_SORT = """example:
  tensorguess sort ./tf_files ~/unsorted ~/sorted
copies ~/unsorted/IMG_0001.jpg to ~/sorted/elsa-0.99636.jpg (never overwriting:
a taken name gets -1, -2, ...) and writes ~/sorted/manifest.csv. SRC is only read."""


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow and probe its devices with standard error muted.

    TensorFlow 2.21 prints CUDA and oneDNN notices through absl before any log level
    applies; they would bury our one-line messages. If the import fails, its output is
    shown after all.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `tensorguess` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="tensorguess",
        description="Transfer-learning image classifier: train on folders of photos, "
        "then label images or sort a folder.",
    )
    parser.add_argument("--version", action="version", version=f"tensorguess {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    formatter = argparse.RawDescriptionHelpFormatter

    train = commands.add_parser(
        "train",
        help="train a classifier on TF_FILES/data/<label>/",
        description="Train a classifier on the photos in TF_FILES/data/<label>/ "
        "(one folder per label) and write it into TF_FILES.",
        epilog=EPILOG_TRAIN,
        formatter_class=formatter,
    )
    train.add_argument("tf_files", type=Path, metavar="TF_FILES")
    train.add_argument(
        "--backbone",
        default="efficientnet_lite0",
        help="efficientnet_lite0 (default), efficientnet_lite2, "
        "or hub:<handle-or-SavedModel-folder>",
    )
    train.add_argument(
        "--image_size",
        type=_positive_int,
        help="input size in pixels (default: the backbone's own)",
    )
    train.add_argument(
        "--validation_percentage",
        type=float,
        default=10,
        help="percent of images kept for validation (default 10)",
    )
    train.add_argument(
        "--testing_percentage",
        type=float,
        default=10,
        help="percent of images kept for the final test (default 10)",
    )
    train.add_argument(
        "--bottleneck_dir", type=Path, help="feature cache folder (default TF_FILES/bottlenecks)"
    )
    train.add_argument(
        "--hidden_units",
        type=int,
        default=0,
        help="add a hidden layer of this width (default 0: softmax only)",
    )
    train.add_argument("--dropout", type=float, default=0.0, help="dropout rate (default 0)")
    train.add_argument("--learning_rate", type=float, default=0.001, help="default 0.001")
    train.add_argument(
        "--epochs",
        type=_positive_int,
        default=200,
        help="most epochs; training stops early on validation (default 200)",
    )
    train.add_argument("--batch_size", type=_positive_int, default=64, help="default 64")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--json", action="store_true", help="print a JSON summary at the end")

    guess = commands.add_parser(
        "guess",
        help="label images with a trained classifier",
        description="Print each label with its score, best first.",
        epilog=EPILOG_GUESS,
        formatter_class=formatter,
    )
    guess.add_argument("tf_files", type=Path, metavar="TF_FILES")
    guess.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    guess.add_argument("--top_k", type=_positive_int, help="print only the best K labels")
    guess.add_argument("--json", action="store_true", help="print JSON instead of lines")
    _add_model_flags(guess)

    sort = commands.add_parser(
        "sort",
        help="sort a folder of images into DEST by label",
        description="Classify every image in SRC and copy it into DEST as <label>-<score>.<ext>.",
        epilog=EPILOG_SORT,
        formatter_class=formatter,
    )
    sort.add_argument("tf_files", type=Path, metavar="TF_FILES")
    sort.add_argument("source", type=Path, metavar="SRC")
    sort.add_argument("destination", type=Path, metavar="DEST")
    sort.add_argument("--batch_size", type=_positive_int, default=64, help="default 64")
    sort.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    _add_model_flags(sort)

    sample = commands.add_parser(
        "sample-data",
        help="make a small sample dataset to try the workflow",
        description="Draw photos of shapes into DIR/data/<shape>/ and DIR/test_images/.",
        formatter_class=formatter,
        epilog="example:\n  tensorguess sample-data ./demo/tf_files",
    )
    sample.add_argument("directory", type=Path, metavar="DIR")
    sample.add_argument("--per_label", type=_positive_int, default=60, help="default 60")
    sample.add_argument("--seed", type=int, default=0, help="default 0")

    for command in (train, guess, sort, sample):
        command.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _add_model_flags(command: argparse.ArgumentParser) -> None:
    group = command.add_argument_group("model (label_image.py's flags, for old graphs)")
    group.add_argument("--graph", type=Path, help="default TF_FILES/retrained_graph.pb")
    group.add_argument("--labels", type=Path, help="default retrained_labels.txt beside the graph")
    group.add_argument("--input_layer", help="input tensor name (detected by default)")
    group.add_argument("--output_layer", help="output tensor name (default final_result)")
    group.add_argument("--input_height", type=_positive_int)
    group.add_argument("--input_width", type=_positive_int)
    group.add_argument("--input_mean", type=float)
    group.add_argument("--input_std", type=float)


def _classifier(args: argparse.Namespace):
    from tensorguess.predict import load_classifier

    overrides = {
        name: getattr(args, name)
        for name in (
            "input_layer",
            "output_layer",
            "input_height",
            "input_width",
            "input_mean",
            "input_std",
        )
    }
    return load_classifier(args.tf_files, args.graph, args.labels, overrides)


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def run_train(args: argparse.Namespace) -> int:
    """`tensorguess train`."""
    from tensorguess.pipeline import TrainingOptions, train_classifier

    options = TrainingOptions(
        backbone=args.backbone,
        image_size=args.image_size,
        validation_percentage=args.validation_percentage,
        testing_percentage=args.testing_percentage,
        bottleneck_dir=args.bottleneck_dir,
        hidden_units=args.hidden_units,
        dropout=args.dropout,
        learning_rate=args.learning_rate,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    # With --json, standard output holds the JSON alone; the progress lines go to stderr.
    report = _say if args.json else print
    summary = train_classifier(args.tf_files, options, report)
    _print_skipped(summary.skipped, report)
    report(f"Wrote {', '.join(summary.outputs)} in {summary.seconds:.1f} s")
    if args.json:
        print(json.dumps(asdict(summary), indent=2))
    return 0


def _print_skipped(skipped: list, report) -> None:
    if skipped:
        report(f"Skipped {len(skipped)} files:")
        for path, reason in skipped:
            report(f"  {path}: {reason}")


def run_guess(args: argparse.Namespace) -> int:
    """`tensorguess guess`."""
    classifier = _classifier(args)
    results, failures = [], 0
    for prediction in classifier.classify(args.images):
        if prediction.scores is None:
            failures += 1
            _say(f"tensorguess: error: {prediction.path}: {prediction.problem}")
            results.append({"image": str(prediction.path), "error": prediction.problem})
            continue
        ranked = prediction.ranked(classifier.labels, args.top_k)
        results.append(
            {
                "image": str(prediction.path),
                "predictions": [{"label": label, "score": score} for label, score in ranked],
            }
        )
        if not args.json:
            if len(args.images) > 1:
                print(f"{prediction.path}:")
            for label, score in ranked:
                print(f"{label} (score = {score:.5f})")
    if args.json:
        print(json.dumps(results, indent=2))
    return EXIT_PROBLEM if failures else 0


def run_sort(args: argparse.Namespace) -> int:
    """`tensorguess sort` (guessDir)."""
    from tensorguess.sort import sort_folder

    classifier = _classifier(args)
    report = sort_folder(classifier, args.source, args.destination, args.batch_size)
    counts: dict[str, int] = {}
    for _, _, label, _ in report.copied:
        counts[label] = counts.get(label, 0) + 1
    say = _say if args.json else print
    by_label = ", ".join(f"{label} {count}" for label, count in sorted(counts.items()))
    say(f"Sorted {len(report.copied)} images into {args.destination} ({by_label or 'none'})")
    say(f"Manifest: {report.manifest}")
    _print_skipped([(str(path), reason) for path, reason in report.skipped], say)
    if args.json:
        print(
            json.dumps(
                {
                    "sorted": [
                        {"source": str(s), "destination": str(d), "label": label, "score": score}
                        for s, d, label, score in report.copied
                    ],
                    "skipped": [{"path": str(p), "reason": r} for p, r in report.skipped],
                    "manifest": str(report.manifest),
                },
                indent=2,
            )
        )
    return 0


def run_sample_data(args: argparse.Namespace) -> int:
    """`tensorguess sample-data`."""
    from tensorguess.sample_data import write_sample_dataset

    made = write_sample_dataset(args.directory, args.per_label, args.seed)
    print(
        f"Wrote {made.training} training photos to {made.data_dir} and "
        f"{made.test} test photos to {made.test_dir}"
    )
    return 0


NEEDS_TENSORFLOW = {"train", "guess", "sort"}
COMMANDS = {
    "train": run_train,
    "guess": run_guess,
    "sort": run_sort,
    "sample-data": run_sample_data,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tensorguess` command."""
    args = build_parser().parse_args(argv)
    if args.command in NEEDS_TENSORFLOW and not args.debug:
        _import_tensorflow_quietly()
    try:
        return COMMANDS[args.command](args)
    except TensorguessError as error:
        if args.debug:
            raise
        _say(f"tensorguess: error: {error}")
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        _say("tensorguess: interrupted; the previous model and the cache are intact")
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001  (the user gets one line; --debug shows the rest)
        if args.debug:
            raise
        _say(f"tensorguess: internal error: {type(error).__name__}: {error} (rerun with --debug)")
        return EXIT_BUG
