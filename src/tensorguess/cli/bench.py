"""`tensorguess bench`: speed and accuracy beside the old ways (docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tensorguess.cli.common import add_debug_flag, command_parser, count, positive_int, say

NAME = "bench"
EPILOG = """example (2 cores: about 5 minutes for 500 photos, and 1 per 10,000 --many):
  {prog} ~/photos /tmp/bench --many 20000 --output docs/benchmarks.md
"""


def add_parser(commands) -> argparse.ArgumentParser:
    """The bench command and its flags."""
    bench = command_parser(
        commands,
        NAME,
        help="measure speed and accuracy beside the old ways (docs/benchmarks.md)",
        description="On PHOTOS/<label>/*.jpg, measure feature extraction (each engine, cold "
        "and warm cache), train (cold and warm), guessDir and peak memory, beside the 2016 "
        "per-image label_dir loop and a Keras end-to-end fit of the frozen backbone for the "
        "same number of epochs, and print the table with the ratios.",
        epilog=EPILOG,
    )
    bench.add_argument(
        "photos", type=Path, metavar="PHOTOS", help="photos in PHOTOS/<label>/ (two labels or more)"
    )
    bench.add_argument("work", type=Path, metavar="WORK", help="an empty or new folder")
    bench.add_argument("--backbone", default="efficientnet_lite0", help="default %(default)s")
    bench.add_argument(
        "--epochs",
        type=positive_int,
        default=20,
        help="epochs of both trainings, ours and the Keras fit (default 20; early stopping "
        "may end ours sooner, and the Keras fit then runs as many)",
    )
    bench.add_argument(
        "--many",
        type=count,
        default=0,
        help="also sort this many images (the photos repeated as hard links) for peak memory",
    )
    bench.add_argument("--output", type=Path, help="also write the Markdown table here")
    bench.add_argument(
        "--quick",
        action="store_true",
        help="leave out the slowest rows (the float32 engines' feature extraction, the Keras "
        "fit, the default preset's training, guessDir's second run) and the trains' "
        "report.html: to check that the benchmark runs, not to measure",
    )
    add_debug_flag(bench)
    bench.set_defaults(run=run, interrupted="the figures so far are lost; WORK may be deleted")
    return bench


def run(args: argparse.Namespace) -> int:
    """Run every step, print the table, write it if asked."""
    from tensorguess.bench.benchmark import command_line, render_markdown, run_benchmark
    from tensorguess.files import write_text_atomic

    result = run_benchmark(
        args.photos, args.work, args.epochs, args.many, args.backbone, say, quick=args.quick
    )
    table = render_markdown(result, command_line(sys.argv[1:]))
    print(table, end="")
    if args.output:
        write_text_atomic(args.output, table)
    return 0
