"""`tensorguess export`: each format built, checked against TensorFlow, then put in place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tensorguess.errors import TensorguessError
from tensorguess.export.source import CALIBRATION_PHOTOS
from tensorguess.export.tflite import FLOAT16, FLOAT32, INT8
from tensorguess.files import folder_lock, make_folder, printable

# Format -> the name it is written under in the output folder (scripts rely on them).
FORMATS = {
    "tflite": "model.tflite",
    "tflite-fp16": "model_fp16.tflite",
    "tflite-int8": "model_int8.tflite",
    "onnx": "model.onnx",
    "serving": "serving/<n>/",
}
EXPORT_DIR = "export"
SCRATCH_PREFIX = ".tmp-export-"
# How far a file's scores may stray from TensorFlow's on the same pixels before export
# refuses it. int8 has none: its cost is measured on the test split and printed instead.
TOLERANCE = {"tflite": 1e-4, "tflite-fp16": 0.02, "onnx": 1e-4, "serving": 1e-4}
QUANTISED = ("tflite-fp16", "tflite-int8")


@dataclass
class Exported:
    """One file (or folder) export wrote, its size and, quantised, what it costs in accuracy."""

    format: str
    path: str
    bytes: int
    test_accuracy: float | None = None
    float32_test_accuracy: float | None = None
    test_count: int = 0
    figure: str = "accuracy"  # what the two test figures are: accuracy, or micro-F1

    def describe(self) -> str:
        """`model_int8.tflite (4.0 MB; test accuracy 97.1%, float32 97.6%, N=206)`
        (multi-label: `test micro-F1 0.912, float32 0.915`)."""
        text = f"{printable(self.path)} ({self.bytes / 1e6:.1f} MB"
        if self.test_accuracy is not None:
            shown = "{:.1%}" if self.figure == "accuracy" else "{:.3f}"
            text += (
                f"; test {self.figure} {shown.format(self.test_accuracy)}, float32 "
                f"{shown.format(self.float32_test_accuracy)}, N={self.test_count}"
            )
        elif self.format in QUANTISED:
            text += "; no test photos in TF_FILES/data to measure its accuracy on"
        return text + ")"

    def to_json(self) -> dict:
        """The entry `export --json` prints."""
        return asdict(self)


def parse_formats(text: str) -> list[str]:
    """`tflite,onnx` -> ["tflite", "onnx"] (`all` for every format); ValueError names the
    unknown one."""
    formats: list[str] = []
    for name in (part.strip() for part in text.split(",")):
        if name == "all":
            formats += [known for known in FORMATS if known not in formats]
        elif name not in FORMATS:
            raise ValueError(f"unknown format {name!r}: choose from {', '.join(FORMATS)} or all")
        elif name not in formats:
            formats.append(name)
    return formats


def export_formats(
    tf_files: Path,
    formats: list[str],
    output: Path | None = None,
    say: Callable[[str], None] = print,
    calibration_photos: int | None = None,
) -> list[Exported]:
    """Write each of `formats` of the classifier in `tf_files` into `output` (TF_FILES/export).

    Each is written whole or not at all: built under a temporary name in `output`, checked
    against TensorFlow, then renamed into place, so an interrupted export leaves what was
    there before, and a format that fails leaves those written before it. int8 calibrates on
    up to `calibration_photos` training photos.
    """
    tf_files = Path(tf_files)
    output = Path(output) if output else tf_files / EXPORT_DIR
    if output.exists() and not output.is_dir():
        raise TensorguessError(f"{output}: a file, not a folder; give another --output")
    from tensorguess.export.source import read_trained_model
    from tensorguess.quiet import quiet_tensorflow_logger

    with quiet_tensorflow_logger():  # each format traces the graph anew: "retracing" warnings
        model = read_trained_model(tf_files)
        require_runtimes(formats)
        make_folder(output)
        written = []
        with folder_lock(output, "export"):
            for leftover in output.glob(f"{SCRATCH_PREFIX}*"):  # what a killed export left
                shutil.rmtree(leftover, ignore_errors=True)
            job = _Job(model, output, calibration_photos or CALIBRATION_PHOTOS)
            for name in formats:
                exported = job.export(name)
                say(f"Wrote {exported.describe()}")
                written.append(exported)
    return written


def require_runtimes(formats: list[str]) -> None:
    """Install the export extra now (once) if `formats` need it: before any work is done."""
    if any(name != "serving" for name in formats):
        from tensorguess.extras import require_extra

        require_extra("export")


Scorer = Callable[[np.ndarray], np.ndarray]


class _Job:
    """One export: the model, its photos, and TensorFlow's scores every file must match."""

    def __init__(self, model, output: Path, calibration_photos: int):
        from tensorguess.export.source import check_pixels, model_photos

        self.model, self.output = model, output
        self.photos = model_photos(model, calibration_photos)
        self.pixels = check_pixels(model, self.photos)
        self.reference = model.reference_scores(self.pixels)
        self._float32_accuracy = None

    def export(self, name: str) -> Exported:
        """Build format `name`, check it, measure it if quantised, and put it in place."""
        build: dict[str, Callable[[Path], Scorer]] = {
            "tflite": lambda built: self._tflite(built, FLOAT32),
            "tflite-fp16": lambda built: self._tflite(built, FLOAT16),
            "tflite-int8": lambda built: self._tflite(built, INT8),
            "onnx": self._onnx,
            "serving": self._serving,
        }
        target = self._target(name)
        with tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX, dir=self.output) as scratch:
            built = Path(scratch) / target.name
            scores = build[name](built)(self.pixels)
            self._check(target, name, scores)
            exported = Exported(name, str(target), _size(built))
            if name in QUANTISED:
                self._measure(exported, built)
            os.replace(built, target)
        if name == "serving":
            exported.path = f"{target}{os.sep}"
        return exported

    def _target(self, name: str) -> Path:
        if name != "serving":
            return self.output / FORMATS[name]
        from tensorguess.export.serving import SERVING_DIR, next_version

        base = self.output / SERVING_DIR
        base.mkdir(exist_ok=True)
        return base / str(next_version(base))

    def _tflite(self, built: Path, precision: str) -> Scorer:
        from tensorguess.classify.exported import LiteRTModel
        from tensorguess.export.tflite import metadata_for, tflite_model
        from tensorguess.export.tflite_metadata import with_metadata

        calibration = self._calibration_pixels() if precision == INT8 else None
        data = tflite_model(self.model, precision, calibration)
        built.write_bytes(with_metadata(data, metadata_for(self.model, precision)))
        return LiteRTModel(built.read_bytes()).scores

    def _onnx(self, built: Path) -> Scorer:
        from tensorguess.classify.exported import OnnxModel
        from tensorguess.export.onnx import onnx_model

        built.write_bytes(onnx_model(self.model))
        return OnnxModel(built.read_bytes()).scores

    def _serving(self, built: Path) -> Scorer:
        from tensorguess.export.serving import served_scores, write_serving_model

        write_serving_model(built, self.model)
        return served_scores(built)

    def _calibration_pixels(self) -> np.ndarray:
        from tensorguess.data.images import pixel_batches

        if not self.photos.calibration:
            raise TensorguessError(
                f"{self.model.tf_files / 'data'}: no training photos to calibrate tflite-int8 "
                "on; put the photos the model was trained on back in TF_FILES/data/<label>/"
            )
        paths = [image.path for image in self.photos.calibration]
        batches = pixel_batches(paths, self.model.image_size, 64)
        return np.concatenate([pixels[[not why for why in reasons]] for pixels, reasons in batches])

    def _check(self, target: Path, name: str, scores: np.ndarray) -> None:
        """Refuse a file whose scores are not finite, or stray from TensorFlow's."""
        if not np.isfinite(scores).all():
            raise TensorguessError(
                f"{target}: the converted model gives NaN or infinite scores; it was not written"
            )
        tolerance = TOLERANCE.get(name)
        difference = float(np.abs(scores - self.reference).max())
        if tolerance is not None and difference > tolerance:
            raise TensorguessError(
                f"{target}: the converted model's scores differ from TensorFlow's by "
                f"{difference:.2g} (at most {tolerance:g} allowed); it was not written"
            )

    def _measure(self, exported: Exported, built: Path) -> None:
        """A quantised file's accuracy on the test split, beside float32's on the same photos."""
        if not self.photos.test:
            return
        from tensorguess.classify.exported import ExportedClassifier
        from tensorguess.classify.loading import load_classifier
        from tensorguess.features.engines import FLOAT32 as F32_PRECISION
        from tensorguess.features.engines import resolved_engine
        from tensorguess.quality.evaluate import evaluate_images

        if self._float32_accuracy is None:
            engine = resolved_engine(None, F32_PRECISION)
            reference = load_classifier(self.model.tf_files, engine=engine)
            self._float32_accuracy = evaluate_images(reference, self.photos.test).headline[1]
        quantised = evaluate_images(ExportedClassifier(built), self.photos.test)
        exported.figure, exported.test_accuracy = quantised.headline
        exported.test_count = quantised.count
        exported.float32_test_accuracy = self._float32_accuracy


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())
