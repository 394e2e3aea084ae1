"""Measure guessDir locally and on Ray (a local runtime, 1 and 2 workers), for docs/benchmarks.md.

    .venv/bin/python scripts/bench_cluster.py TF_FILES PHOTOS WORK [--rounds 3]

PHOTOS is a flat folder of images (guessDir sorts the top level of SRC). Each round runs the
three ways one after the other, in fresh processes into fresh DEST folders, so that the
machine's load (shared with others) weighs on all three alike; the medians are printed.

Two rates per run: the whole command (start-up included: Python, the model, and for Ray
the local runtime and its actors), and the steady rate from the first copy in DEST to the
last (their inode change times: the moment each got its name), which is what a long run
gets. A third figure is the driver's own share: hashing and copying one photo, without
classifying, which bounds how fast one driver can sort however many workers it has. And
`--classify_only` times the classification alone, in this process (no copies): the local
classifier, then Ray workers; the steady rate (after the first batch) of one worker is
the per-worker rate docs/cluster.md's cost estimate starts from.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WAYS = {"local": [], "ray, 1 worker": ["--ray", "--ray_workers", "1"]}
WAYS["ray, 2 workers"] = ["--ray", "--ray_workers", "2"]


def sort_once(tf_files: Path, photos: Path, destination: Path, extra: list[str]) -> dict:
    """One whole `tensorguess sort`: its wall time and steady rate."""
    started = time.monotonic()
    command = [sys.executable, "-m", "tensorguess", "sort", tf_files, photos, destination]
    subprocess.run([*map(str, command), *extra], check=True, capture_output=True)
    wall = time.monotonic() - started
    changed = sorted(
        entry.stat().st_ctime for entry in destination.iterdir() if entry.name != "manifest.csv"
    )
    count = len(changed)
    return {
        "count": count,
        "wall": wall,
        "whole": count / wall,
        "steady": (count - 1) / (changed[-1] - changed[0]),
    }


def driver_rate(photos: Path, work: Path) -> float:
    """Photos per second that the driver hashes and copies (verified), without classifying."""
    from tensorguess.classify.sort import FreeNames, copy_without_overwriting
    from tensorguess.files import file_digest

    destination = work / "driver-only"
    destination.mkdir()
    names = FreeNames(destination)
    paths = sorted(photos.iterdir())
    started = time.monotonic()
    for path in paths:
        copy_without_overwriting(path, names, f"x{path.suffix}", file_digest(path))
    return len(paths) / (time.monotonic() - started)


def classify_rate(scorer, paths: list[Path]) -> tuple[float, float]:
    """(seconds to the first prediction, steady images/s after it) of `scorer.classify`."""
    started = time.monotonic()
    first = None
    count = 0
    for _ in scorer.classify(paths, 64):
        count += 1
        if first is None:
            first = time.monotonic()
            counted_from = count
    return first - started, (count - counted_from) / (time.monotonic() - first)


def classify_only(tf_files: Path, photos: Path, rounds: int) -> None:
    """Classification alone: locally, then on a local Ray runtime with 1 and 2 workers."""
    from tensorguess.classify.cluster.connection import RayCluster, RaySettings
    from tensorguess.classify.cluster.workers import ClusterClassifier
    from tensorguess.classify.loading import load_classifier

    paths = sorted(photos.iterdir())
    classifier = load_classifier(tf_files)
    rates: dict[str, list[tuple[float, float]]] = {}
    for round_number in range(rounds):
        for way, workers in (("local", 0), ("ray, 1 worker", 1), ("ray, 2 workers", 2)):
            if workers:
                with RayCluster(RaySettings("", workers)) as cluster:
                    result = classify_rate(ClusterClassifier(cluster, classifier), paths)
            else:
                result = classify_rate(classifier, paths)
            rates.setdefault(way, []).append(result)
            print(
                f"round {round_number + 1}, classify only, {way}: first after {result[0]:.1f} s, "
                f"then {result[1]:.0f} images/s (load {load()})",
                flush=True,
            )
    print("\n| classify only | to the first batch | images/s after it |")
    print("| --- | --- | --- |")
    for way, results in rates.items():
        first = statistics.median(result[0] for result in results)
        steady = statistics.median(result[1] for result in results)
        print(f"| {way} | {first:.1f} s | {steady:.0f} |")


def load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tf_files", type=Path)
    parser.add_argument("photos", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--classify_only", action="store_true")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.classify_only:
        print(f"load average before: {load()}", flush=True)
        classify_only(args.tf_files, args.photos, args.rounds)
        return
    results: dict[str, list[dict]] = {way: [] for way in WAYS}
    print(f"load average before: {load()}", flush=True)
    for round_number in range(args.rounds):
        for way, extra in WAYS.items():
            destination = Path(tempfile.mkdtemp(dir=args.work)) / "sorted"
            result = sort_once(args.tf_files, args.photos, destination, extra)
            results[way].append(result)
            shutil.rmtree(destination.parent)
            print(
                f"round {round_number + 1}, {way}: {result['count']} photos, "
                f"{result['wall']:.1f} s, {result['whole']:.0f} images/s whole, "
                f"{result['steady']:.0f} steady (load {load()})",
                flush=True,
            )
    with tempfile.TemporaryDirectory(dir=args.work) as scratch:
        driver = driver_rate(args.photos, Path(scratch))
    print(f"load average after: {load()}")
    local = statistics.median(result["steady"] for result in results["local"])
    print("\n| way | whole command | images/s, whole | images/s, steady | steady vs local |")
    print("| --- | --- | --- | --- | --- |")
    for way, runs in results.items():
        wall = statistics.median(run["wall"] for run in runs)
        whole = statistics.median(run["whole"] for run in runs)
        steady = statistics.median(run["steady"] for run in runs)
        print(
            f"| {way} | {wall:.1f} s | {whole:.0f} | {steady:.0f} | "
            f"{100 * (steady / local - 1):+.0f}% |"
        )
    print(f"\ndriver alone (hash and verified copy, no classifying): {driver:.0f} images/s")


if __name__ == "__main__":
    main()
