"""Each measured step of the benchmark as a command of its own, run in a fresh process so that
its time and peak memory are its own:

    python -m tensorguess.bench.steps STEP ARGUMENTS...

`run_measured` runs a command and measures it; `step` builds the command line of a step.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tensorguess.errors import TensorguessError


@dataclass
class Step:
    """One measured command: wall seconds, peak RSS, and what it printed."""

    name: str
    seconds: float
    peak_rss_mb: float
    output: str = ""


def run_measured(name: str, command: list[str], cwd: Path | None = None) -> Step:
    """Run `command`, returning its wall time and peak RSS; fail with its output if it fails."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise TensorguessError(f"benchmark step {name!r} failed:\n{output[-2000:]}")
    return Step(name, seconds, usage.ru_maxrss / 1024, output)


def step(name: str, *arguments: object) -> list[str]:
    """The command line of the step `name` (one of `parser`'s) with its `arguments`."""
    return [sys.executable, "-m", "tensorguess.bench.steps", name, *map(str, arguments)]


def parser() -> argparse.ArgumentParser:
    """The steps and their arguments."""
    steps = argparse.ArgumentParser(prog="python -m tensorguess.bench.steps", description=__doc__)
    names = steps.add_subparsers(dest="step", required=True)
    speeds = names.add_parser("feature_speeds", help="feature extraction with each engine")
    speeds.add_argument("tf_files")
    speeds.add_argument("cache")
    speeds.add_argument("backbone")
    speeds.add_argument("--every_engine", action="store_true")
    keras = names.add_parser("keras_end_to_end", help="the Keras end-to-end fit")
    keras.add_argument("tf_files")
    keras.add_argument("backbone")
    keras.add_argument("epochs", type=int)
    legacy = names.add_parser("legacy_sort", help="the 2016 per-image loop")
    for argument in ("graph", "labels", "source", "destination"):
        legacy.add_argument(argument)
    profile = names.add_parser("stage_profile", help="guessDir's stages, each timed alone")
    for argument in ("tf_files", "photos", "work"):
        profile.add_argument(argument)
    profile.add_argument("--engine")
    return steps


def main(argv: list[str] | None = None) -> None:
    """Run one step."""
    args = parser().parse_args(argv)
    if args.step == "feature_speeds":
        from tensorguess.bench.profile import feature_speeds

        feature_speeds(args.tf_files, args.cache, args.backbone, args.every_engine)
    elif args.step == "keras_end_to_end":
        from tensorguess.bench.baselines import keras_end_to_end

        keras_end_to_end(args.tf_files, args.backbone, args.epochs)
    elif args.step == "legacy_sort":
        from tensorguess.bench.baselines import legacy_sort

        legacy_sort(args.graph, args.labels, args.source, args.destination)
    else:
        from tensorguess.bench.profile import stage_profile

        stage_profile(args.tf_files, args.photos, args.work, args.engine)


if __name__ == "__main__":
    main()
