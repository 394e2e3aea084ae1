"""Exported files run by the runtimes an app developer uses: LiteRT for .tflite, ONNX Runtime
for .onnx. Export checks each file it writes with them, and `--model FILE` (guess, guessDir,
evaluate) labels photos with them, so a quantised model is tried on one's own photos before
it ships.

Both take RGB pixels 0-255 squashed to the model's size, decoded as training decoded them
(`images.load_pixels`); their labels travel inside the file (the TFLite metadata's labels
file, the ONNX `labels` property), and so does a multi-label model's task and thresholds
(the TFLite file's score calibration, whose offsets are the thresholds' log-odds; the ONNX
`task` and `thresholds` properties).
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from tensorguess.classify.model_reader import read_model_bytes
from tensorguess.classify.prediction import BATCH_SIZE, Prediction
from tensorguess.classify.task import SINGLE, Task, task_named
from tensorguess.errors import TensorguessError, first_line
from tensorguess.extras import require_extra
from tensorguess.quiet import muted_stderr

MODEL_SUFFIXES = (".tflite", ".onnx")
# The labels file packed into a .tflite file after its flatbuffer (export/tflite_metadata.py).
PACKED_LABELS_FILE = "labels.txt"
# A multi-label .tflite file's score calibration, packed likewise: one line per label,
# "scale,slope,offset" (export/tflite_metadata.py says why).
PACKED_CALIBRATION_FILE = "score_calibration.txt"


class LiteRTModel:
    """A .tflite classifier in LiteRT's interpreter: uint8 or float32 in, scores out."""

    def __init__(self, data: bytes):
        require_extra("export")
        from ai_edge_litert.interpreter import Interpreter

        with muted_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            self._interpreter = Interpreter(model_content=data, num_threads=os.cpu_count() or 1)
            self._interpreter.allocate_tensors()
        self.input = self._interpreter.get_input_details()[0]
        self.output = self._interpreter.get_output_details()[0]
        self.image_size = int(self.input["shape"][1])

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """Scores [B, N] of uint8 pixels [B, S, S, 3], one image at a time (batch 1 inside)."""
        rows = []
        for image in pixels:
            self._interpreter.set_tensor(
                self.input["index"], image[None].astype(self.input["dtype"])
            )
            self._interpreter.invoke()
            row = self._interpreter.get_tensor(self.output["index"])[0].astype(np.float32)
            scale, zero_point = self.output["quantization"]
            rows.append((row - zero_point) * scale if scale else row)
        return np.stack(rows)


class OnnxModel:
    """A .onnx classifier in ONNX Runtime (CPU): uint8 [B, S, S, 3] in, scores out."""

    def __init__(self, data: bytes):
        require_extra("export")
        import onnxruntime

        self._session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0]
        self.image_size = int(self._input.shape[1])
        self.properties = self._session.get_modelmeta().custom_metadata_map

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """Scores [B, N] of uint8 pixels [B, S, S, 3]."""
        return self._session.run(None, {self._input.name: np.asarray(pixels, np.uint8)})[0]


class ExportedClassifier:
    """An exported .tflite or .onnx file with its labels, used as `classifier.Classifier` is."""

    def __init__(self, path: Path):
        self.graph_path = Path(path)  # what reports name as the model
        data = read_model_bytes(self.graph_path)
        suffix = self.graph_path.suffix.lower()
        if suffix not in MODEL_SUFFIXES:
            raise TensorguessError(
                f"{path}: --model takes a .tflite or .onnx file written by tensorguess export"
            )
        try:
            self.model = LiteRTModel(data) if suffix == ".tflite" else OnnxModel(data)
        except TensorguessError:
            raise
        except Exception as error:  # noqa: BLE001  (whatever the runtime says of a bad file)
            raise TensorguessError(f"{path}: cannot load the model ({first_line(error)})") from None
        if suffix == ".tflite":
            labels, self.task = packed_labels(data), packed_task(data)
        else:
            properties = self.model.properties
            labels = _json_labels(properties.get("labels"))
            thresholds = json.loads(properties.get("thresholds") or "[]")
            self.task = task_named(properties.get("task"), thresholds)
        if not labels:
            raise TensorguessError(
                f"{path}: no labels inside; export the model again with tensorguess export"
            )
        self.labels = labels
        self.novelty_threshold = None  # the exported files score; novelty stays in TF_FILES

    def classify(self, paths: Sequence[Path], batch_size: int = BATCH_SIZE) -> Iterator[Prediction]:
        """Score `paths` in order; an unreadable file gets a problem instead."""
        from tensorguess.data.images import pixel_batches
        from tensorguess.features.engines import run_ahead

        size = self.model.image_size
        start = 0
        for scores, reasons in run_ahead(self._scores, pixel_batches(paths, size, batch_size)):
            for offset, reason in enumerate(reasons):
                path = Path(paths[start + offset])
                if reason:
                    yield Prediction(path, None, reason)
                    continue
                given = self.task.answer(scores[offset], self.labels)
                yield Prediction(path, scores[offset], labels=given)
            start += len(reasons)

    def _scores(self, pixels: np.ndarray) -> np.ndarray:
        scores = self.model.scores(pixels)
        if scores.shape[-1] != len(self.labels):
            raise TensorguessError(
                f"{self.graph_path}: {len(self.labels)} labels inside, but it scores "
                f"{scores.shape[-1]} classes; export the model again with tensorguess export"
            )
        return scores


def _json_labels(text: str | None) -> list[str] | None:
    try:
        labels = json.loads(text) if text else None
    except ValueError:
        return None
    if isinstance(labels, list) and all(isinstance(label, str) for label in labels):
        return labels
    return None


def _packed_lines(model: bytes, name: str) -> list[str] | None:
    """The lines of file `name` packed in a .tflite file, or None."""
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as packed:
            text = packed.read(name).decode("utf-8")
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError):
        return None
    lines = text.split("\n")
    while lines and not lines[-1]:
        lines.pop()
    return lines or None


def packed_labels(model: bytes) -> list[str] | None:
    """The labels packed in a .tflite file by `export.tflite_metadata.with_metadata` (or
    MediaPipe's writers), or None."""
    return _packed_lines(model, PACKED_LABELS_FILE)


def packed_task(model: bytes) -> Task:
    """The task of a .tflite file: multi-label, with the thresholds its score calibration
    shifts to 0.5, when it packs one; single-label otherwise."""
    lines = _packed_lines(model, PACKED_CALIBRATION_FILE)
    if not lines:
        return SINGLE
    try:
        offsets = [float(line.split(",")[2]) for line in lines]
    except (IndexError, ValueError):
        return SINGLE
    return task_named("multi-label", [1 / (1 + math.exp(offset)) for offset in offsets])
