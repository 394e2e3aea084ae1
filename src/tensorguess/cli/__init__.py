"""The command line: parse arguments, call one stage, print. Nothing else.

One module per command holds its arguments beside its runner; this one builds the parser
from them and turns what goes wrong into one line and an exit code.
"""

from __future__ import annotations

import argparse

from tensorguess import __version__
from tensorguess.cli import bench, doctor, evaluate, guess, sample_data, sort, train
from tensorguess.cli.common import EXIT_BUG, EXIT_INTERRUPTED, EXIT_PROBLEM, say
from tensorguess.errors import InvalidOption, TensorguessError

COMMANDS = (train, guess, sort, evaluate, doctor, sample_data, bench)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `tensorguess` and its subcommands (each knows its own parser)."""
    parser = argparse.ArgumentParser(
        prog="tensorguess",
        description="Transfer-learning image classifier: train on folders of photos, "
        "then label images or sort a folder.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"tensorguess {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        subparser = command.add_parser(commands)
        subparser.set_defaults(command_parser=subparser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tensorguess` command."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's own parser, so its usage line is the one shown
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.run(args)
    except InvalidOption as error:
        # A setting out of range is a bad command line, like argparse's own refusals (exit 2).
        if args.debug:
            raise
        args.command_parser.error(str(error))
    except TensorguessError as error:
        if args.debug:
            raise
        say(f"tensorguess: error: {error}")
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        say(f"tensorguess: interrupted; {args.interrupted}")
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001  (the user gets one line; --debug shows the rest)
        if args.debug:
            raise
        say(f"tensorguess: internal error: {type(error).__name__}: {error} (rerun with --debug)")
        return EXIT_BUG
    return EXIT_PROBLEM  # not reached: error() exits
