"""The benchmark: our pipeline beside the old ways (baselines.py), on the same photos and
backbone, and its Markdown table.

Every step runs in a fresh subprocess (steps.py), so its peak RSS is its own (`os.wait4`;
this process stays small, since a child's peak counts what it inherited at fork). The
commands a user runs (train, guessDir, the 2016 loop, the Keras end-to-end fit) are timed
whole, start-up included; feature extraction and a sort's stages are timed inside their
process (profile.py): features cold (empty cache, after a warm-up that builds the engine's
model) and warm.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tensorguess.bench.steps import Step, run_measured, step
from tensorguess.errors import TensorguessError
from tensorguess.model_files import GRAPH_FILE, LABELS_FILE


@dataclass
class BenchResult:
    """Everything the benchmark measured, for the table."""

    photos: int
    labels: int
    epochs: int
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def link_photos(photos: Path, work: Path) -> tuple[Path, Path, int, int]:
    """tf_files/data/<label> symlinked to the photo folders, and a flat folder of all photos."""
    if not photos.is_dir():
        raise TensorguessError(f"{photos}: no such folder of photos")
    labels = sorted(p for p in photos.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(labels) < 2:
        raise TensorguessError(
            f"{photos}: the benchmark needs one sub-folder of photos per label "
            "(at least two), as in tf_files/data/"
        )
    tf_files, flat = work / "tf_files", work / "flat"
    (tf_files / "data").mkdir(parents=True)
    flat.mkdir()
    count = 0
    for label in labels:
        (tf_files / "data" / label.name).symlink_to(label.resolve(), target_is_directory=True)
        for photo in sorted(label.iterdir()):
            if photo.is_file() and not photo.name.startswith("."):
                (flat / f"{label.name}__{photo.name}").symlink_to(photo.resolve())
                count += 1
    return tf_files, flat, count, len(labels)


def make_many(flat: Path, folder: Path, total: int) -> Path:
    """`total` files cycling through the photos of `flat` (hard links where possible)."""
    folder.mkdir()
    photos = sorted(flat.iterdir())
    for number in range(total):
        source = photos[number % len(photos)].resolve()
        target = folder / f"{number:06d}{source.suffix}"
        try:
            os.link(source, target)
        except OSError:
            target.symlink_to(source)
    return folder


def _accuracy(output: str) -> str:
    match = re.search(r"Final test accuracy = ([\d.]+%) \(N=(\d+)\)", output)
    return f"{match.group(1)} (N={match.group(2)})" if match else "n/a"


def _epochs_run(output: str) -> int:
    return max(int(number) for number in re.findall(r"^Epoch (\d+):", output, re.MULTILINE))


def run_benchmark(
    photos: Path,
    work: Path,
    epochs: int | None = 20,
    many: int = 0,
    backbone: str = "efficientnet_lite0",
    say=print,
    quick: bool = False,
) -> BenchResult:
    """Measure everything on `photos` (laid out like <label>/*.jpg), working in `work`.

    `quick` leaves out the slowest rows (the float32 engines' feature extraction, the Keras
    fit, the default preset's training, guessDir's second run) and the trains' report.html:
    for checking that the benchmark runs, not for figures.
    """
    photos, work = Path(photos).resolve(), Path(work).resolve()
    if work.exists() and (not work.is_dir() or any(work.iterdir())):
        raise TensorguessError(f"{work}: choose an empty or new folder for the benchmark")
    work.mkdir(parents=True, exist_ok=True)
    tf_files, flat, count, labels = link_photos(photos, work)
    result = BenchResult(photos=count, labels=labels, epochs=0)
    cli = [sys.executable, "-m", "tensorguess"]
    rows = result.rows

    say(f"feature extraction with each engine ({count} photos)...")
    speeds = run_measured(
        "feature extraction",
        step(
            "feature_speeds",
            tf_files,
            work / "feature-cache",
            backbone,
            *([] if quick else ["--every_engine"]),
        ),
    )
    rows += [tuple(row) for row in json.loads(speeds.output.strip().splitlines()[-1])]

    say("train --preset fast, cold then warm cache...")
    train = [*cli, "train", str(tf_files), "--backbone", backbone, "--preset", "fast"]
    if epochs:
        train += ["--epochs", str(epochs)]
    if quick:
        train.append("--no_report")
    train_cold = run_measured("train (cold)", train)
    train_warm = run_measured("train (warm)", train)
    result.epochs = _epochs_run(train_warm.output)
    rows += [
        (
            "train --preset fast, cold cache",
            f"{train_cold.seconds:.1f} s",
            _accuracy(train_cold.output),
        ),
        (
            f"train --preset fast, warm cache ({result.epochs} epochs)",
            f"{train_warm.seconds:.1f} s",
            _accuracy(train_warm.output),
        ),
    ]
    if not quick:
        say(f"Keras end-to-end fit, {result.epochs} epochs...")
        keras_fit = run_measured(
            "keras fit",
            step("keras_end_to_end", tf_files, backbone, result.epochs),
        )
        say("train with the default preset's fine-tuning, warm cache...")
        default = run_measured(
            "train (default preset)", [*cli, "train", str(tf_files), "--backbone", backbone]
        )
        ratio = keras_fit.seconds / train_warm.seconds
        rows += [
            (
                f"old: Keras end-to-end fit, frozen backbone, {result.epochs} epochs",
                f"{keras_fit.seconds:.1f} s",
                _accuracy(keras_fit.output),
            ),
            ("ratio: Keras fit / our warm train", f"{ratio:.1f}x", ""),
            (
                f"train (default preset's fine-tuning, {backbone}), warm cache",
                f"{default.seconds:.1f} s",
                _accuracy(default.output),
            ),
        ]

    say("guessDir, ours (first and second run) and the 2016 loop...")
    sort = [*cli, "sort", str(tf_files), str(flat)]
    first = run_measured("guessDir (first)", [*sort, str(work / "sorted")])
    legacy = _legacy_step("2016 loop", tf_files, flat, work / "sorted-2016")
    runs = [("first run", first)]
    if not quick:
        runs.append(("second run", run_measured("guessDir (later)", [*sort, str(work / "again")])))
    rows += [
        (
            f"guessDir, {name} (wall, whole command)",
            f"{count / step.seconds:.1f} images/s",
            f"{step.seconds:.1f} s, peak RSS {step.peak_rss_mb:.0f} MB",
        )
        for name, step in runs
    ]
    rows += [
        (
            "old: 2016 per-image loop (wall, whole script)",
            f"{count / legacy.seconds:.1f} images/s",
            f"{legacy.seconds:.1f} s, peak RSS {legacy.peak_rss_mb:.0f} MB",
        ),
        (
            f"ratio: 2016 loop / guessDir ({', '.join(name for name, _ in runs)})",
            ", ".join(f"{legacy.seconds / step.seconds:.1f}x" for _, step in runs),
            "",
        ),
    ]
    say("guessDir's stages, each alone...")
    rows += profile_rows(tf_files, flat, work / "profile", first.seconds)
    if not quick:
        rows += int8_rows(cli, tf_files, flat, work, backbone, count, say)
    if many:
        say(f"guessDir on {many} images...")
        folder = make_many(flat, work / "many", many)
        big = run_measured(
            "guessDir many", [*cli, "sort", str(tf_files), str(folder), str(work / "many-sorted")]
        )
        rows.append(
            (
                f"guessDir, {many} images (wall)",
                f"{many / big.seconds:.1f} images/s",
                f"peak RSS {big.peak_rss_mb:.0f} MB",
            )
        )
    return result


def _legacy_step(name: str, tf_files: Path, source: Path, destination: Path) -> Step:
    return run_measured(
        name,
        step("legacy_sort", tf_files / GRAPH_FILE, tf_files / LABELS_FILE, source, destination),
    )


def profile_rows(
    tf_files: Path, flat: Path, work: Path, sort_seconds: float, label: str = "guessDir"
) -> list[tuple[str, str, str]]:
    """`stage_profile`'s stages as table rows (`label` first), and how far the whole sort is
    from decoding alone."""
    measured = run_measured("stage profile", step("stage_profile", tf_files, flat, work))
    profile = json.loads(measured.output.strip().splitlines()[-1])
    photos, stages = profile["photos"], profile["stages"]
    total = sum(seconds for _, seconds in stages)
    rows = [
        (
            f"{label} stage alone: {name}",
            f"{1000 * seconds / photos:.2f} ms/photo ({100 * seconds / total:.0f}%)",
            f"{photos / seconds:.0f} photos/s alone",
        )
        for name, seconds in stages
    ]
    decoding = next(seconds for name, seconds in stages if name.startswith("decoding"))
    rows.append(
        (
            f"{label} (whole command) / decoding alone",
            f"{decoding / sort_seconds:.2f}",
            f"decoding alone {photos / decoding:.0f} photos/s, same photos and threads",
        )
    )
    return rows


def int8_rows(
    cli: list[str], tf_files: Path, flat: Path, work: Path, backbone: str, count: int, say
) -> list[tuple[str, str, str]]:
    """Train the default preset with `--engine openvino-int8`, then guessDir (int8 when the
    check kept it) and the 2016 loop on that very graph."""
    say("train with --engine openvino-int8, then guessDir and the 2016 loop on its graph...")
    train = run_measured(
        "train (int8)",
        [*cli, "train", str(tf_files), "--backbone", backbone, "--engine", "openvino-int8"],
    )
    check = re.search(r"^int8: (.*)$", train.output, re.MULTILINE)
    sort = run_measured(
        "guessDir (int8)", [*cli, "sort", str(tf_files), str(flat), str(work / "int8")]
    )
    legacy = _legacy_step("2016 loop (int8 train's graph)", tf_files, flat, work / "int8-2016")
    profile = profile_rows(tf_files, flat, work / "int8-profile", sort.seconds, "int8 guessDir")
    return [
        (
            f"train --engine openvino-int8 (default preset's fine-tuning, {backbone})",
            f"{train.seconds:.1f} s",
            f"{_accuracy(train.output)}; {check.group(1) if check else 'no int8 check ran'}",
        ),
        (
            "guessDir after it (wall, whole command)",
            f"{count / sort.seconds:.1f} images/s",
            f"{sort.seconds:.1f} s, peak RSS {sort.peak_rss_mb:.0f} MB",
        ),
        (
            "old: 2016 per-image loop on the same graph",
            f"{count / legacy.seconds:.1f} images/s",
            f"{legacy.seconds:.1f} s",
        ),
        (
            "ratio: 2016 loop / guessDir after the int8 train",
            f"{legacy.seconds / sort.seconds:.1f}x",
            "",
        ),
        *profile,
    ]


def render_markdown(result: BenchResult, command: str) -> str:
    """The results as the Markdown table of docs/benchmarks.md."""
    lines = [
        f"Measured {datetime.date.today().isoformat()} on {os.cpu_count()} CPU cores "
        f"({platform.machine()}, Python {platform.python_version()}), "
        f"{result.photos} photos of {result.labels} labels. Every row but feature extraction "
        "is a whole command in a fresh process (start-up included).",
        "",
        f"    {command}",
        "",
        "| measurement | result | detail |",
        "| --- | --- | --- |",
        *(f"| {name} | {value} | {detail} |" for name, value, detail in result.rows),
    ]
    return "\n".join(lines) + "\n"


def command_line(argv: list[str]) -> str:
    """The command that made a result, as a user would retype it."""
    return "tensorguess " + " ".join(shlex.quote(part) for part in argv)
