"""Measurements made inside one process: feature extraction's rate per engine, and each
stage of a sort timed alone. Each prints its result as one JSON line for the benchmark,
which runs it in a fresh process (steps.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def feature_speed(
    tf_files: Path, cache: Path, backbone_name: str, engine: str
) -> tuple[float, float, int]:
    """Images/s of feature extraction with an empty cache, then with a full one.

    A warm-up on a few photos first builds the engine's model (freezing the backbone and
    compiling it: a few seconds once per run), which is a start-up cost, not a rate.
    """
    from tensorguess.data.dataset import scan_data
    from tensorguess.features.backbones import get_backbone
    from tensorguess.features.bottlenecks import cached_features
    from tensorguess.features.engines import INT8_ENGINE
    from tensorguess.features.engines.int8 import calibration_photos

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


def feature_speeds(tf_files: str, cache: str, backbone_name: str, every_engine: bool) -> None:
    """Print (as one JSON line) the table rows of feature extraction with each engine."""
    from tensorguess.features.engines import INT8_ENGINE, engine_precision, resolved_engine

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


def stage_profile(tf_files: str, photos: str, work: str, engine: str | None = None) -> None:
    """Print (one JSON line) guessDir's stages, each timed alone on the same photos in one
    process: hashing, decoding and resizing (the sort's threads), the network (its engine, on
    pixels decoded beforehand), the copies (written, checked, fsynced, named) and the manifest
    lines. Their sum is the work a sort does; the whole command overlaps some of it."""
    import numpy as np

    from tensorguess.classify.loading import load_classifier
    from tensorguess.classify.prediction import BATCH_SIZE
    from tensorguess.classify.sort import (
        SYNC_EVERY,
        FreeNames,
        Manifest,
        copy_without_overwriting,
        list_sources,
    )
    from tensorguess.data.images import pixel_batches
    from tensorguess.files import file_digest

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
            copy_without_overwriting(path, names, path.name, digest).path
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
