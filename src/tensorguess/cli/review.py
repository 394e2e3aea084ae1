"""`tensorguess review`: a page to look at doubtful photos and correct the training data."""

from __future__ import annotations

import argparse
from pathlib import Path

from tensorguess.cli.common import (
    API_KEY_VARIABLE,
    add_debug_flag,
    add_engine_flag,
    command_parser,
    say,
    server_api_key,
)
from tensorguess.extras import require_extra

NAME = "review"
EPILOG = """examples:
  {prog} ./tf_files                          # then open http://127.0.0.1:8502/
  {prog} ./tf_files --sorted ~/sorted        # with guessDir.sh's unsure- and unknown- copies
  TENSORGUESS_API_KEY=secret {prog} ./tf_files --host 0.0.0.0   # reachable from elsewhere

On the page: a digit relabels the photo chosen (the labels are numbered), r removes it
from training (into TF_FILES/removed/), k keeps it (not listed again until it changes),
u undoes the last action, arrows move. Every action is written to TF_FILES/review.jsonl
before it is done; nothing is deleted or overwritten. "Train again" runs train.sh's
training with the model's preset. The JSON API: /docs, and docs/review.md."""


def add_parser(commands) -> argparse.ArgumentParser:
    """The review command and its flags."""
    review = command_parser(
        commands,
        NAME,
        help="a page to look at doubtful photos, relabel or remove them, and train again",
        description="Serve a page (and a JSON API) listing the photos worth a look, most "
        "useful first: training photos whose label looks wrong, near-duplicates, outliers, "
        "and the unsure-/unknown- copies of each sorted DEST; relabel, remove, keep or undo "
        "each, then train again.",
        epilog=EPILOG,
    )
    review.add_argument(
        "tf_files",
        type=Path,
        metavar="TF_FILES",
        help="the folder with your photos in data/<label>/ (and the model, if trained)",
    )
    review.add_argument(
        "--sorted",
        type=Path,
        nargs="+",
        action="extend",
        default=[],
        metavar="DEST",
        help="folders guessDir.sh sorted into: their unsure- and unknown- copies are listed "
        "too; relabelling one copies it into data/<label>/ and records the label in its "
        "manifest line (a last column, reviewed_label); DEST is otherwise left as it is",
    )
    review.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default 127.0.0.1, this machine only); any other "
        "needs an API key",
    )
    review.add_argument("--port", type=int, default=8502, help="default 8502; 0 picks a free one")
    review.add_argument(
        "--api_key",
        help="require Authorization: Bearer KEY on /api/ (the page asks for it; default "
        f"${API_KEY_VARIABLE}, which keeps it out of the process list)",
    )
    add_engine_flag(review, "what computes missing features and heat maps (default: auto)")
    add_debug_flag(review)
    review.set_defaults(
        run=run,
        interrupted="the review stopped; every action done is in TF_FILES/review.jsonl",
    )
    return review


def run(args: argparse.Namespace) -> int:
    """Serve the review until Ctrl-C."""
    if not 0 <= args.port <= 65535:
        args.command_parser.error(f"--port must be between 0 and 65535, got {args.port}")
    api_key = server_api_key(args)
    require_extra("serve")
    from tensorguess.review.server import ReviewSettings, run_review

    settings = ReviewSettings(
        tf_files=args.tf_files,
        dests=args.sorted,
        host=args.host,
        port=args.port,
        api_key=api_key,
        engine=args.engine,
    )
    run_review(settings, say)
    return 0
