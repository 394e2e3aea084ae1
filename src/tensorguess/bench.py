"""The benchmark: our pipeline beside the old ways, on the same photos and backbone.

Every step runs in a fresh subprocess, so its peak RSS is its own (`os.wait4`; this
process stays small, since a child's peak counts what it inherited at fork). The
commands a user runs (train, guessDir, the 2016 loop, the Keras end-to-end fit) are timed
whole, start-up included; feature extraction is timed inside its process, cold (empty
cache, after a warm-up that builds the engine's model) and warm.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tensorguess.errors import TensorguessError


@dataclass
class Step:
    """One measured command: wall seconds, peak RSS, and what it printed."""

    name: str
    seconds: float
    peak_rss_mb: float
    output: str = ""


@dataclass
class BenchResult:
    """Everything the benchmark measured, for the table."""

    photos: int
    labels: int
    epochs: int
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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


def _python(*arguments: str) -> list[str]:
    return [sys.executable, *arguments]


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


def feature_speed(
    tf_files: Path, cache: Path, backbone_name: str, engine: str
) -> tuple[float, float, int]:
    """Images/s of feature extraction with an empty cache, then with a full one.

    A warm-up on a few photos first builds the engine's model (freezing the backbone and
    compiling it: a few seconds once per run), which is a start-up cost, not a rate.
    """
    from tensorguess.backbones import get_backbone
    from tensorguess.bottlenecks import cached_features
    from tensorguess.dataset import scan_data
    from tensorguess.engines import INT8_ENGINE
    from tensorguess.engines.int8 import calibration_photos

    images = scan_data(tf_files / "data").images
    paths = [image.path for image in images]
    backbone = get_backbone(backbone_name)
    calibration = None
    if engine == INT8_ENGINE:  # measured on all the photos, as train does on its training ones
        calibration = calibration_photos(paths, [image.digest for image in images])
    warmup = cache / f"warmup-{engine}"
    cached_features(backbone, paths[:8], warmup, engine=engine, calibration=calibration)
    speeds = []
    for _ in range(2):
        started = time.perf_counter()
        cached_features(backbone, paths, cache / engine, engine=engine, calibration=calibration)
        speeds.append(len(paths) / (time.perf_counter() - started))
    return speeds[0], speeds[1], len(paths)


def legacy_sort(graph: str, labels: str, source: str, destination: str) -> None:
    """The 2016 label_dir.py way: one session call per image feeding its bytes, then a copy."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    names = [line.rstrip() for line in open(labels, encoding="utf-8")]
    graph_def = tf1.GraphDef()
    with open(graph, "rb") as stream:
        graph_def.ParseFromString(stream.read())
    os.makedirs(destination, exist_ok=True)
    with tf.Graph().as_default():
        tf.import_graph_def(graph_def, name="")
        with tf1.Session() as session:
            softmax = session.graph.get_tensor_by_name("final_result:0")
            for number, name in enumerate(sorted(os.listdir(source))):
                path = os.path.join(source, name)
                with open(path, "rb") as stream:
                    scores = session.run(softmax, {"DecodeJpeg/contents:0": stream.read()})[0]
                best = int(scores.argmax())
                target = f"{number}-{names[best]}-{scores[best]:.5f}{os.path.splitext(name)[1]}"
                shutil.copy(path, os.path.join(destination, target))


def keras_end_to_end(tf_files: str, backbone_name: str, epochs: int) -> None:
    """make_image_classifier's way: fit a frozen backbone + softmax on images, every epoch.

    The same photos, split, decoder and backbone as ours; only the caching differs.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from tensorguess.backbones import get_backbone
    from tensorguess.dataset import TEST, TRAIN, VALIDATION, scan_data
    from tensorguess.images import pixel_batches

    scan = scan_data(Path(tf_files) / "data")
    backbone = get_backbone(backbone_name)
    backbone.model.trainable = False
    index = {label: i for i, label in enumerate(scan.labels)}
    size = backbone.image_size

    def dataset(split: str, shuffle: bool):
        images = list(scan.split(split))

        def batches():
            order = np.random.permutation(len(images)) if shuffle else range(len(images))
            chosen = [images[i] for i in order]
            labels = np.array([index[image.label] for image in chosen])
            start = 0
            for pixels, _ in pixel_batches([image.path for image in chosen], size, 32):
                yield np.float32(pixels), labels[start : start + len(pixels)]
                start += len(pixels)

        return tf.data.Dataset.from_generator(
            batches,
            output_signature=(
                tf.TensorSpec([None, size, size, 3], tf.float32),
                tf.TensorSpec([None], tf.int64),
            ),
        )

    class Preprocess(keras.layers.Layer):
        def call(self, pixels):
            return backbone.preprocess(pixels)

    pixels = keras.Input((size, size, 3))
    features = backbone.model(Preprocess()(pixels), training=False)
    outputs = keras.layers.Dense(len(scan.labels), activation="softmax")(features)
    model = keras.Model(pixels, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(
        dataset(TRAIN, True),
        validation_data=dataset(VALIDATION, False),
        epochs=epochs,
        verbose=0,
    )
    _, accuracy = model.evaluate(dataset(TEST, False), verbose=0)
    print(f"Final test accuracy = {100 * accuracy:.1f}% (N={len(scan.split(TEST))})")


def stage_profile(tf_files: str, photos: str, work: str, engine: str | None = None) -> None:
    """Print (one JSON line) guessDir's stages, each timed alone on the same photos in one
    process: hashing, decoding and resizing (the sort's threads), the network (its engine, on
    pixels decoded beforehand), the copies (written, checked, fsynced, named) and the manifest
    lines. Their sum is the work a sort does; the whole command overlaps some of it."""
    import numpy as np

    from tensorguess.files import file_digest
    from tensorguess.images import pixel_batches
    from tensorguess.predict import BATCH_SIZE, load_classifier
    from tensorguess.sort import (
        SYNC_EVERY,
        FreeNames,
        Manifest,
        copy_without_overwriting,
        list_sources,
    )

    classifier = load_classifier(Path(tf_files), engine=engine)
    destination = Path(work)
    files, _ = list_sources(Path(photos), destination)
    stages = []

    def timed(name: str, work) -> None:
        started = time.perf_counter()
        work()
        stages.append((name, time.perf_counter() - started))

    digests: list[str] = []
    timed("hashing (SHA-256 of each photo)", lambda: digests.extend(map(file_digest, files)))
    size = classifier.image_size
    timed(
        "decoding and resizing (a thread per core)",
        lambda: all(True for _ in pixel_batches(files, size, BATCH_SIZE)),
    )
    sample = np.concatenate(
        [pixels for pixels, _ in pixel_batches(files[: BATCH_SIZE * 4], size, BATCH_SIZE)]
    )

    def network() -> None:
        for start in range(0, len(files), BATCH_SIZE):
            count = min(BATCH_SIZE, len(files) - start)
            rows = [(start + offset) % len(sample) for offset in range(count)]
            classifier.predict_pixels(sample[rows], files[start : start + count])

    timed(f"network ({classifier.engine})", network)
    destination.mkdir(parents=True, exist_ok=True)
    names = FreeNames(destination)
    copies: list[Path] = []
    timed(
        "copies (written, checked against the hash, fsynced, named)",
        lambda: copies.extend(
            copy_without_overwriting(path, names, path.name, digest)
            for path, digest in zip(files, digests, strict=True)
        ),
    )
    manifest = Manifest(destination, classifier.labels)
    scores = [1.0 / len(classifier.labels)] * len(classifier.labels)

    def lines() -> None:  # as the sort writes them
        for path, copy, digest in zip(files, copies, digests, strict=True):
            manifest.add(path, copy, classifier.labels[0], digest, scores)
            if manifest.unsynced >= SYNC_EVERY:
                manifest.sync()
        manifest.close()

    timed(f"manifest lines (fsynced every {SYNC_EVERY})", lines)
    print(json.dumps({"photos": len(files), "engine": classifier.engine, "stages": stages}))


def _accuracy(output: str) -> str:
    match = re.search(r"Final test accuracy = ([\d.]+%) \(N=(\d+)\)", output)
    return f"{match.group(1)} (N={match.group(2)})" if match else "n/a"


def _epochs_run(output: str) -> int:
    return max(int(number) for number in re.findall(r"^Epoch (\d+):", output, re.MULTILINE))


def feature_speeds(tf_files: str, cache: str, backbone_name: str, every_engine: bool) -> None:
    """Print (as one JSON line) the table rows of feature extraction with each engine."""
    from tensorguess.engines import INT8_ENGINE, engine_precision, resolved_engine

    default = resolved_engine("auto")
    engines = [(default, f"{default} ({engine_precision(default)}, the default here)")]
    if every_engine and default == "openvino":
        engines.append((INT8_ENGINE, f"{INT8_ENGINE} (int8, scales from up to 300 photos)"))
    for engine in ("openvino-f32", "tensorflow") if every_engine else ():
        if engine != default and (engine != "openvino-f32" or default == "openvino"):
            engines.append((engine, f"{engine} (f32)"))
    rows = []
    for engine, name in engines:
        cold, warm, _ = feature_speed(Path(tf_files), Path(cache), backbone_name, engine)
        rows.append((f"feature extraction, cold cache, {name}", f"{cold:.0f} images/s", ""))
    rows.append(("feature extraction, warm cache", f"{warm:.0f} images/s", "reading the cache"))
    print(json.dumps(rows))


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
    fit, the default preset's training, guessDir's second run): for checking that the
    benchmark runs, not for figures.
    """
    photos, work = Path(photos).resolve(), Path(work).resolve()
    if work.exists() and (not work.is_dir() or any(work.iterdir())):
        raise TensorguessError(f"{work}: choose an empty or new folder for the benchmark")
    work.mkdir(parents=True, exist_ok=True)
    tf_files, flat, count, labels = link_photos(photos, work)
    result = BenchResult(photos=count, labels=labels, epochs=0)
    cli = _python("-m", "tensorguess")
    rows = result.rows

    say(f"feature extraction with each engine ({count} photos)...")
    speeds = run_measured(
        "feature extraction",
        _python(
            "-c",
            "from tensorguess.bench import feature_speeds; "
            f"feature_speeds({str(tf_files)!r}, {str(work / 'feature-cache')!r}, {backbone!r}, "
            f"{not quick})",
        ),
    )
    rows += [tuple(row) for row in json.loads(speeds.output.strip().splitlines()[-1])]

    say("train --preset fast, cold then warm cache...")
    train = [*cli, "train", str(tf_files), "--backbone", backbone, "--preset", "fast"]
    if epochs:
        train += ["--epochs", str(epochs)]
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
            _python(
                "-c",
                f"from tensorguess.bench import keras_end_to_end; "
                f"keras_end_to_end({str(tf_files)!r}, {backbone!r}, {result.epochs})",
            ),
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
        _python(
            "-c",
            "from tensorguess.bench import legacy_sort; legacy_sort("
            f"{str(tf_files / 'retrained_graph.pb')!r}, "
            f"{str(tf_files / 'retrained_labels.txt')!r}, {str(source)!r}, "
            f"{str(destination)!r})",
        ),
    )


def profile_rows(
    tf_files: Path, flat: Path, work: Path, sort_seconds: float, label: str = "guessDir"
) -> list[tuple[str, str, str]]:
    """`stage_profile`'s stages as table rows (`label` first), and how far the whole sort is
    from decoding alone."""
    arguments = f"{str(tf_files)!r}, {str(flat)!r}, {str(work)!r}"
    step = run_measured(
        "stage profile",
        _python("-c", f"from tensorguess.bench import stage_profile; stage_profile({arguments})"),
    )
    profile = json.loads(step.output.strip().splitlines()[-1])
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
