"""The command line: parse arguments, call one stage, print. Nothing else."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from tensorguess import __version__
from tensorguess.errors import TensorguessError
from tensorguess.files import printable
from tensorguess.inference import ENGINES, import_tensorflow_quietly

EXIT_PROBLEM = 1  # a problem with the input, named in one line
EXIT_USAGE = 2  # argparse's code for a bad command line
EXIT_BUG = 3  # an unexpected error: a bug, shown in full with --debug
EXIT_INTERRUPTED = 130

EPILOG_TRAIN = """example:
  tensorguess train ./tf_files          # photos in ./tf_files/data/<label>/
  tensorguess train ./tf_files --preset fast
  tensorguess train ./tf_files --preset best --summaries_dir /tmp/tensorboard

writes into TF_FILES: retrained_graph.pb, retrained_labels.txt, saved_model/,
tensorguess.json, report.html (with training_curves.png and confusion_matrix.png), and
the feature cache bottlenecks/ (safe to delete). Measured presets: docs/accuracy.md."""

EPILOG_GUESS = """example:
  tensorguess guess ./tf_files photo.jpg
  elsa (score = 0.99636)
  darth_vader (score = 0.00364)

old graphs (retrain.py, TensorFlow for Poets) work too; label_image.py's flags
override what is detected."""

EPILOG_BENCH = """example (2 cores: about 5 minutes for 500 photos, and 1 per 10,000 --many):
  tensorguess bench ~/photos /tmp/bench --many 20000 --output docs/benchmarks.md
"""

EPILOG_EVALUATE = """example (superheroes' 25 test photos, filed by label):
  tensorguess evaluate ./tf_files ~/checked_photos --report ~/checked.html
  Accuracy = 100.0% (N=25)
  label        precision  recall     F1  photos
  darth_vader      1.000   1.000  1.000       9
  elsa             1.000   1.000  1.000      16
  Confusion matrix (rows: true label, columns: guessed label, in the order above):
        9     0  darth_vader
        0    16  elsa

LABELLED_DIR holds one folder per label, named as in retrained_labels.txt. Misclassified
photos are listed after the table, with the guessed label's score and the true one's."""

EPILOG_SORT = """example:
  tensorguess sort ./tf_files ~/unsorted ~/sorted
copies ~/unsorted/IMG_0001.jpg to ~/sorted/elsa-0.99636.jpg (never overwriting:
a taken name gets -1, -2, ...) and writes ~/sorted/manifest.csv. SRC is only read
(unless --move). Run it again after new photos arrive, or after an interrupted run:
what the manifest lists is not sorted twice."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _score(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
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
        "--preset",
        choices=list(PRESET_HELP),
        default="balanced",
        help="; ".join(f"{name}: {text}" for name, text in PRESET_HELP.items())
        + ". Any flag below overrides its preset's value.",
    )
    train.add_argument(
        "--backbone",
        help="efficientnet_lite0, efficientnet_lite2, or hub:<handle-or-SavedModel-folder> "
        f"({_preset_default('backbone')})",
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
    _add_training_flags(train)
    train.add_argument(
        "--summaries_dir",
        type=Path,
        help="write TensorBoard summaries (cross entropy, accuracy per epoch) here",
    )
    train.add_argument(
        "--no_report",
        action="store_true",
        help="skip report.html and its PNG figures (saves a few seconds; a report from an "
        "earlier run is left as it was)",
    )
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
    sort.add_argument(
        "--move",
        action="store_true",
        help="delete each source once its copy in DEST is verified (size and SHA-256)",
    )
    sort.add_argument(
        "--min_score",
        type=_score,
        default=0.0,
        help="name images whose best score is under this unsure-<label>-<score>.<ext> "
        "(0-1, default 0)",
    )
    sort.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    _add_model_flags(sort)

    evaluate = commands.add_parser(
        "evaluate",
        help="measure a classifier on labelled photos",
        description="Score every photo of LABELLED_DIR/<label>/ (laid out like TF_FILES/data) "
        "and print the accuracy, precision, recall and F1 per label, the confusion matrix and "
        "the misclassified photos with their scores.",
        epilog=EPILOG_EVALUATE,
        formatter_class=formatter,
    )
    evaluate.add_argument("tf_files", type=Path, metavar="TF_FILES")
    evaluate.add_argument("labelled_dir", type=Path, metavar="LABELLED_DIR")
    evaluate.add_argument(
        "--report", type=Path, help="also write this HTML page (figures and thumbnails inside)"
    )
    evaluate.add_argument("--batch_size", type=_positive_int, default=64, help="default 64")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of lines")
    _add_model_flags(evaluate)

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

    bench = commands.add_parser(
        "bench",
        help="measure speed and accuracy beside the old ways (docs/benchmarks.md)",
        description="On PHOTOS/<label>/*.jpg, measure feature extraction (each engine, cold "
        "and warm cache), train (cold and warm), guessDir and peak memory, beside the 2016 "
        "per-image label_dir loop and a Keras end-to-end fit of the frozen backbone for the "
        "same number of epochs, and print the table with the ratios.",
        epilog=EPILOG_BENCH,
        formatter_class=formatter,
    )
    bench.add_argument("photos", type=Path, metavar="PHOTOS")
    bench.add_argument("work", type=Path, metavar="WORK", help="an empty or new folder")
    bench.add_argument("--backbone", default="efficientnet_lite0", help="default %(default)s")
    bench.add_argument(
        "--epochs",
        type=_positive_int,
        default=20,
        help="epochs of both trainings, ours and the Keras fit (default 20; early stopping "
        "may end ours sooner, and the Keras fit then runs as many)",
    )
    bench.add_argument(
        "--many",
        type=_count,
        default=0,
        help="also sort this many images (the photos repeated as hard links) for peak memory",
    )
    bench.add_argument("--output", type=Path, help="also write the Markdown table here")

    for command in (train, guess, sort, evaluate):
        command.add_argument(
            "--engine",
            choices=ENGINES,
            help="what runs the network: auto (the default, or $TENSORGUESS_ENGINE) is "
            "OpenVINO on a CPU, in its fastest precision (bfloat16 on CPUs with AMX), and "
            "TensorFlow when it sees a GPU; openvino-f32 and tensorflow compute in float32",
        )
    for command in (train, guess, sort, evaluate, sample, bench):
        command.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


PRESET_HELP = {
    "fast": "a softmax on the frozen backbone's cached features: seconds once the cache is "
    "warm, as retrain.py",
    "balanced": "the default; then fine-tunes the backbone's top blocks, which cannot use the "
    "feature cache: minutes per epoch on a CPU even with a warm cache, and a few points more "
    "accurate",
    "best": "fine-tunes more blocks for more epochs: about three times as long as balanced",
}


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and under 1, got {value}")
    return value


def _percent(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be between 0 and 100, got {value}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _preset_default(name: str, text: str = "") -> str:
    """`text` and how the presets set option `name`, for --help."""
    from tensorguess.presets import DEFAULT_PRESET, PRESETS, preset_options

    values = {preset: getattr(preset_options(preset), name) for preset in PRESETS}
    if len(set(values.values())) == 1:
        default = f"default {values[DEFAULT_PRESET]}"
    else:
        default = "preset " + ", ".join(f"{preset}: {value}" for preset, value in values.items())
    return f"{text} ({default})" if text else default


def _add_training_flags(train: argparse.ArgumentParser) -> None:
    """The options the presets set; each flag given overrides its preset's value."""
    head = train.add_argument_group("the classifier head (trained on cached features)")
    flags = [
        ("hidden_units", _count, "add a hidden layer this wide, 0 for softmax only"),
        ("dropout", _fraction, "dropout rate"),
        ("label_smoothing", _fraction, "spread this share of each target over the others"),
        ("learning_rate", float, "Adam's learning rate"),
        ("epochs", _positive_int, "most epochs; training stops early on validation"),
        ("batch_size", _positive_int, "photos per step"),
        ("seed", int, "random seed"),
    ]
    for name, kind, text in flags:
        head.add_argument(f"--{name}", type=kind, help=_preset_default(name, text))
    head.add_argument(
        "--class_weights",
        choices=["none", "balanced"],
        help=_preset_default(
            "class_weights", "balanced: weigh each label inversely to its number of photos"
        ),
    )
    head.add_argument(
        "--learning_rate_schedule",
        choices=["constant", "cosine"],
        help=_preset_default("learning_rate_schedule", "cosine: decay to 0 over --epochs"),
    )

    distort = train.add_argument_group(
        "distortions (retrain.py's, off unless set): the head learns from distorted views of "
        "each training photo, computed once and cached; fine-tuning distorts every step"
    )
    distort.add_argument(
        "--flip_left_right",
        action=argparse.BooleanOptionalAction,
        help=_preset_default("flip_left_right", "mirror half of the photos"),
    )
    for name, text in (
        ("random_crop", "margin cropped off, percent"),
        ("random_scale", "most enlargement, percent"),
        ("random_brightness", "most brightening or darkening, percent"),
    ):
        distort.add_argument(f"--{name}", type=_percent, help=_preset_default(name, text))
    distort.add_argument(
        "--distorted_views",
        type=_count,
        help=_preset_default("distorted_views", "cached views per photo, 0 for none"),
    )

    tune = train.add_argument_group(
        "fine-tuning: it cannot use the feature cache, so every epoch runs the backbone on "
        "every training photo (minutes per epoch on a CPU); efficientnet_lite backbones only"
    )
    tune.add_argument(
        "--fine_tune",
        action=argparse.BooleanOptionalAction,
        help=_preset_default("fine_tune", "fine-tune the backbone's top blocks with the head"),
    )
    for name, kind, text in (
        ("fine_tune_blocks", _positive_int, "how many top blocks to train"),
        ("fine_tune_epochs", _positive_int, "fine-tuning epochs"),
        ("fine_tune_learning_rate", float, "fine-tuning's learning rate"),
    ):
        tune.add_argument(f"--{name}", type=kind, help=_preset_default(name, text))


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
    return load_classifier(args.tf_files, args.graph, args.labels, overrides, args.engine)


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def run_train(args: argparse.Namespace) -> int:
    """`tensorguess train`."""
    from dataclasses import fields

    from tensorguess.pipeline import TrainingOptions, train_classifier
    from tensorguess.presets import preset_options

    given = {
        field.name: getattr(args, field.name)
        for field in fields(TrainingOptions)
        if getattr(args, field.name, None) is not None
    }
    if args.no_report:
        given["report"] = False
    options = preset_options(args.preset, **given)
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
            report(f"  {printable(path)}: {reason}")


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
    report = sort_folder(
        classifier,
        args.source,
        args.destination,
        args.batch_size,
        move=args.move,
        min_score=args.min_score,
    )
    counts: dict[str, int] = {}
    for _, _, label, _ in report.copied:
        counts[label] = counts.get(label, 0) + 1
    say = _say if args.json else print
    by_label = ", ".join(f"{label} {count}" for label, count in sorted(counts.items()))
    say(f"Sorted {len(report.copied)} images into {args.destination} ({by_label or 'none'})")
    if report.unsure:
        say(f"Unsure (best score under {args.min_score}): {report.unsure}, named unsure-*")
    if report.already_sorted:
        say(f"Already sorted by an earlier run: {len(report.already_sorted)}")
    if args.move:
        say(f"Removed from {args.source} after verifying their copies: {report.moved}")
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
                    "already_sorted": [
                        {"source": str(s), "destination": str(d)} for s, d in report.already_sorted
                    ],
                    "manifest": str(report.manifest),
                },
                indent=2,
            )
        )
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """`tensorguess evaluate`."""
    from tensorguess.evaluate import evaluate_folder, summary_lines

    classifier = _classifier(args)
    evaluation = evaluate_folder(classifier, args.labelled_dir, args.batch_size)
    say = _say if args.json else print
    for line in summary_lines(evaluation):
        say(line)
    if evaluation.count:
        say("Confusion matrix (rows: true label, columns: guessed label, in the order above):")
        for label, row in zip(evaluation.labels, evaluation.confusion, strict=True):
            say(f"  {' '.join(f'{count:5d}' for count in row)}  {label}")
    if args.report:
        from tensorguess.report import write_report

        facts = [("model", str(classifier.graph_path)), ("photos", str(args.labelled_dir))]
        title = f"tensorguess: {args.labelled_dir.resolve().name}"
        write_report(args.report, title, facts, evaluation, save_figures=False)
        say(f"Report: {args.report}")
    _print_skipped(evaluation.skipped, say)
    if args.json:
        print(json.dumps(asdict(evaluation), indent=2))
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


def run_bench(args: argparse.Namespace) -> int:
    """`tensorguess bench`."""
    from tensorguess.bench import command_line, render_markdown, run_benchmark
    from tensorguess.files import write_text_atomic

    result = run_benchmark(args.photos, args.work, args.epochs, args.many, args.backbone, _say)
    table = render_markdown(result, command_line(sys.argv[1:]))
    print(table, end="")
    if args.output:
        write_text_atomic(args.output, table)
    return 0


# guess, sort and evaluate import TensorFlow themselves only if they need it (a model
# OpenVINO has converted before runs without it).
NEEDS_TENSORFLOW = {"train"}
COMMANDS = {
    "train": run_train,
    "guess": run_guess,
    "sort": run_sort,
    "evaluate": run_evaluate,
    "sample-data": run_sample_data,
    "bench": run_bench,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tensorguess` command."""
    args = build_parser().parse_args(argv)
    if args.command in NEEDS_TENSORFLOW and not args.debug:
        import_tensorflow_quietly()
    try:
        return COMMANDS[args.command](args)
    except TensorguessError as error:
        if args.debug:
            raise
        _say(f"tensorguess: error: {error}")
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        if args.command == "sort":
            _say("tensorguess: interrupted; run it again to finish (nothing is sorted twice)")
        else:
            _say("tensorguess: interrupted; the previous model and the cache are intact")
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001  (the user gets one line; --debug shows the rest)
        if args.debug:
            raise
        _say(f"tensorguess: internal error: {type(error).__name__}: {error} (rerun with --debug)")
        return EXIT_BUG
