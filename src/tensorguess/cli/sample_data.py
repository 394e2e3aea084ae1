"""`tensorguess sample-data`: draw a small dataset of shapes to try the workflow on."""

from __future__ import annotations

import argparse
from pathlib import Path

from tensorguess.cli.common import add_debug_flag, command_parser, positive_int

NAME = "sample-data"


def add_parser(commands) -> argparse.ArgumentParser:
    """The sample-data command and its flags."""
    sample = command_parser(
        commands,
        NAME,
        help="make a small sample dataset to try the workflow",
        description="Draw photos of shapes into DIR/data/<shape>/ and DIR/test_images/.",
        epilog="example:\n  {prog} ./demo/tf_files",
    )
    sample.add_argument(
        "directory", type=Path, metavar="DIR", help="where data/ and test_images/ go"
    )
    sample.add_argument("--per_label", type=positive_int, default=60, help="default 60")
    sample.add_argument("--seed", type=int, default=0, help="default 0")
    add_debug_flag(sample)
    sample.set_defaults(run=run, interrupted="run it again into an empty folder")
    return sample


def run(args: argparse.Namespace) -> int:
    """Draw the photos."""
    from tensorguess.data.sample_data import write_sample_dataset

    made = write_sample_dataset(args.directory, args.per_label, args.seed)
    print(
        f"Wrote {made.training} training photos to {made.data_dir} and "
        f"{made.test} test photos to {made.test_dir}"
    )
    return 0
