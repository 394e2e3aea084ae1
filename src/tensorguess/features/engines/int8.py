"""int8: post-training quantisation of a converted model (NNCF), calibrated on the user's photos.

OpenVINO runs an int8 model on the CPU's VNNI units (AVX-512 VNNI, AMX): on this project's
2-core machine EfficientNet-Lite2 computes about 1.6 times as many images a second as in
bfloat16, Lite0 about 1.4 times (docs/benchmarks.md). The scales of the int8 arithmetic come
from calibration: a few hundred of the user's own training photos run through the float
model. Quantisation can cost accuracy, so the train command keeps an int8 classifier only
when it passes a check on the validation photos (quantize.py), and guess and guessDir run it
from `TF_FILES/openvino-int8/`, beside the graph it was made from.

NNCF is the optional `int8` extra, installed on first use by the train command that asks
for int8; running a quantised model needs OpenVINO alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tensorguess.features.engines.openvino import OPENVINO_BATCH, openvino_core

INT8 = "i8"
INT8_FOLDER = "openvino-int8"
# NNCF's own default; more photos moved the scales by less than the run-to-run noise.
CALIBRATION_PHOTOS = 300


@dataclass(frozen=True)
class Calibration:
    """The photos an int8 model's scales are measured on, and a digest of their contents
    (features computed with those scales are cached under it)."""

    paths: tuple[Path, ...]
    digest: str

    def batches(self, size: tuple[int, int]) -> list[np.ndarray]:
        """The photos decoded as guessDir decodes them, in whole batches of the models' size."""
        from tensorguess.data.images import pixel_batches

        decoded = [pixels for pixels, _ in pixel_batches(list(self.paths), size, 64)]
        pixels = np.concatenate(decoded) if decoded else np.zeros((0, *size, 3), np.uint8)
        whole = len(pixels) // OPENVINO_BATCH * OPENVINO_BATCH
        return [pixels[start : start + OPENVINO_BATCH] for start in range(0, whole, OPENVINO_BATCH)]


def calibration_photos(paths: Sequence[Path], digests: Sequence[str]) -> Calibration:
    """Up to CALIBRATION_PHOTOS of `paths`, chosen by content digest: the same photos on
    every run, whatever their names, spread over the labels as hashes spread."""
    chosen = sorted(zip(digests, paths, strict=True))[:CALIBRATION_PHOTOS]
    digest = hashlib.sha256(" ".join(digest for digest, _ in chosen).encode()).hexdigest()
    return Calibration(tuple(path for _, path in chosen), digest)


def quantized(model, calibration: Calibration, size: tuple[int, int]):
    """`model` (a converted OpenVINO model of fixed batch, uint8 pixels of `size` in) with
    int8 convolutions, their scales measured on the `calibration` photos.

    Matrix products (the head, the novelty score) stay in floating point: they cost
    nothing beside the convolutions, and the scores come straight out of them.
    """
    from tensorguess.extras import require_extra

    require_extra("int8")
    import nncf

    nncf.set_log_level(logging.ERROR)
    batches = calibration.batches(size)
    # NNCF draws its own progress bars: the train command's log has its own lines.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return nncf.quantize(
            model,
            nncf.Dataset(batches),
            subset_size=len(batches),
            preset=nncf.QuantizationPreset.PERFORMANCE,
            ignored_scope=nncf.IgnoredScope(types=["MatMul"], validate=False),
        )


def remove_int8_model(folder: Path) -> None:
    """Remove an int8 model made from an older graph (it would not be used, but misleads)."""
    shutil.rmtree(folder, ignore_errors=True)


def load_int8_model(folder: Path, graph_sha256: str) -> tuple[object, dict] | None:
    """(model, notes) of the int8 model in `folder` made from the graph `graph_sha256`, or
    None (none there, made from another graph, or damaged)."""
    try:
        notes = json.loads((folder / "notes.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(notes, dict) or notes.get("graph_sha256") != graph_sha256:
        return None
    core = openvino_core()
    if core is None:
        return None
    try:
        return core.read_model(str(folder / "model.xml")), notes
    except Exception:  # noqa: BLE001  (a damaged model file: the float graph serves)
        return None
