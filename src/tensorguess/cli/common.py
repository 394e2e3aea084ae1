"""What the commands share: exit codes, printing, argument types, the model and engine flags."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from tensorguess.files import printable

EXIT_PROBLEM = 1  # a problem with the input, named in one line
EXIT_USAGE = 2  # argparse's code for a bad command line
EXIT_BUG = 3  # an unexpected error: a bug, shown in full with --debug
EXIT_INTERRUPTED = 130
# Set by train.sh, guess.sh and guessDir.sh ("bash train.sh"), so that --help and its
# examples name the command the user typed.
WRAPPER_VARIABLE = "TENSORGUESS_WRAPPER"
# The API key of the servers (serve, review) when --api_key is not given.
API_KEY_VARIABLE = "TENSORGUESS_API_KEY"
Say = Callable[[str], None]


def program(command: str) -> str:
    """How the user calls `command`: `bash train.sh` through a wrapper, else `tensorguess train`."""
    return os.environ.get(WRAPPER_VARIABLE) or f"tensorguess {command}"


def command_parser(
    commands, name: str, help: str, description: str, epilog: str = ""
) -> argparse.ArgumentParser:
    """A command's parser; its usage line and examples (`{prog}` in `epilog`) name what the
    user typed. Abbreviated options are refused: the Docker wrapper could not tell that an
    abbreviation names a path to mount."""
    return commands.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog.format(prog=program(name)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        prog=program(name),
        allow_abbrev=False,
    )


def server_api_key(args: argparse.Namespace) -> str | None:
    """A server's API key: --api_key, else $TENSORGUESS_API_KEY, else none; an empty one is a
    bad command line (a key meant and not set would leave the server open)."""
    key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_VARIABLE)
    if key is not None and not key.strip():
        args.command_parser.error(f"the API key (--api_key or ${API_KEY_VARIABLE}) is empty")
    return key.strip() if key else None


def say(text: str) -> None:
    """A line for the person at the terminal (standard error: standard output stays data)."""
    print(text, file=sys.stderr)


def output(json_wanted: bool) -> Say:
    """Where progress and summary lines go: standard error when standard output is JSON."""
    return say if json_wanted else print


def plural(count: int, noun: str) -> str:
    """`1 image`, `2 images`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def print_skipped(skipped: list, report: Say) -> None:
    """The files passed over, each with the reason."""
    if skipped:
        report(f"Skipped {plural(len(skipped), 'file')}:")
        for path, reason in skipped:
            report(f"  {printable(path)}: {reason}")


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


positive_int.__name__ = "int"  # argparse names the type in "invalid int value"


def count(text: str) -> int:
    """An argparse type: a whole number of at least 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


count.__name__ = "int"


def score(text: str) -> float:
    """An argparse type: a score between 0 and 1."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


score.__name__ = "float"


def add_engine_flag(command: argparse.ArgumentParser, text: str) -> None:
    """--engine, for the commands that run the network."""
    from tensorguess.features.engines import ENGINES

    command.add_argument("--engine", choices=ENGINES, help=text)


def add_debug_flag(command: argparse.ArgumentParser) -> None:
    """--debug: tracebacks instead of one line."""
    command.add_argument("--debug", action="store_true", help="show tracebacks")


def add_tf_files(command: argparse.ArgumentParser) -> None:
    """TF_FILES, the first argument of the commands that load a trained model."""
    command.add_argument(
        "tf_files",
        type=Path,
        metavar="TF_FILES",
        help="the folder train.sh wrote the classifier into (retrained_graph.pb and the rest)",
    )


def add_model_flags(command: argparse.ArgumentParser) -> None:
    """label_image.py's flags and --engine, for the commands that load a trained model."""
    group = command.add_argument_group("model (label_image.py's flags, for old graphs)")
    group.add_argument("--graph", type=Path, help="default TF_FILES/retrained_graph.pb")
    group.add_argument("--labels", type=Path, help="default retrained_labels.txt beside the graph")
    group.add_argument("--input_layer", help="input tensor name (detected by default)")
    group.add_argument("--output_layer", help="output tensor name (default final_result)")
    group.add_argument("--input_height", type=positive_int, help="detected by default")
    group.add_argument("--input_width", type=positive_int, help="detected by default")
    group.add_argument("--input_mean", type=float, help="subtracted from each pixel value")
    group.add_argument("--input_std", type=float, help="then divided by this")
    command.add_argument(
        "--model",
        type=Path,
        metavar="FILE",
        help="use this exported model.tflite / model_int8.tflite / model.onnx (tensorguess "
        "export) instead of TF_FILES' graph, to check it on your photos before it ships",
    )
    from tensorguess.features.engines import ENGINE_HELP_MODEL

    add_engine_flag(command, ENGINE_HELP_MODEL)


def add_ray_flags(command: argparse.ArgumentParser, work: str) -> None:
    """--ray [ADDRESS] and --ray_workers N, for the commands whose bulk work Ray can take."""
    group = command.add_argument_group(
        "cluster (Ray, an optional extra that the wrappers install on first use; docs/cluster.md)"
    )
    group.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help=f"{work} on a Ray cluster: ADDRESS is its head (HOST:PORT, ray://HOST:PORT or "
        "auto); without one, $TENSORGUESS_RAY_ADDRESS, else a local Ray runtime. The photos "
        "must be at the same path on every node (shared storage). Put it last, or write "
        "--ray=ADDRESS",
    )
    group.add_argument(
        "--ray_workers",
        type=positive_int,
        metavar="N",
        help="Ray actors, each loading the model once (default: one per GPU, or one per node)",
    )


def ray_settings(args: argparse.Namespace):
    """The `RaySettings` (classify/cluster/connection.py) of --ray and --ray_workers, or None
    without --ray."""
    if args.ray is None:
        if args.ray_workers is not None:
            args.command_parser.error("--ray_workers needs --ray")
        return None
    from tensorguess.classify.cluster.connection import RaySettings

    return RaySettings(args.ray, args.ray_workers)


def load_model(args: argparse.Namespace):
    """The classifier named by TF_FILES and the model flags."""
    from tensorguess.classify.loading import load_classifier

    return load_classifier(
        args.tf_files, args.graph, args.labels, model_overrides(args), args.engine, model=args.model
    )


def model_overrides(args: argparse.Namespace) -> dict:
    """label_image.py's flags, as `load_classifier` takes them."""
    return {
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
