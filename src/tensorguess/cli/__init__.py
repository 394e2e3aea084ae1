"""The command line: parse arguments, call one stage, print. Nothing else.

One module per command holds its arguments beside its runner; this one builds the parser
from them and turns what goes wrong into one line and an exit code.
"""

from __future__ import annotations

import argparse
import signal

from tensorguess import __version__
from tensorguess.cli import (
    bench,
    doctor,
    evaluate,
    export,
    guess,
    review,
    sample_data,
    serve,
    sort,
    train,
)
from tensorguess.cli.common import EXIT_BUG, EXIT_INTERRUPTED, EXIT_PROBLEM, say
from tensorguess.errors import InvalidOption, TensorguessError

COMMANDS = (train, guess, sort, evaluate, export, doctor, sample_data, bench, serve, review)


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
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _note_interrupt)
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
        if _interrupted(error):
            # Ctrl-C inside an import or a library's own handler can come back wrapped.
            say(f"tensorguess: interrupted; {args.interrupted}")
            return EXIT_INTERRUPTED
        if args.debug:
            raise
        say(f"tensorguess: internal error: {type(error).__name__}: {error} (rerun with --debug)")
        return EXIT_BUG
    return EXIT_PROBLEM  # not reached: error() exits


_SIGINT_SEEN = []


def _note_interrupt(signal_number, frame) -> None:
    """Python's own Ctrl-C behaviour, remembering that it happened."""
    _SIGINT_SEEN.append(signal_number)
    raise KeyboardInterrupt


def _interrupted(error: BaseException) -> bool:
    """Whether Ctrl-C caused `error`: a KeyboardInterrupt down its chain, or any failure
    after the signal came (a library can turn the interrupt into an error of its own)."""
    if _SIGINT_SEEN:
        return True
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False
