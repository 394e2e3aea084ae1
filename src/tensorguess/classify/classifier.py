"""The classifier of TF_FILES: a retrained graph (ours or an old tool's) scoring photos in
batches.

Ours get the decoder that trained them (data.images.load_pixels) and, under `--engine auto`,
the precision their head was trained on (tensorguess.json, when it names this very graph).
An old tool's graph gets label_image.py's own preprocessing and float32 arithmetic, so it
answers as the old tool did. Our graphs also give each image a novelty score (`novelty:0`,
features/novelty.py); with the threshold tensorguess.json records, a prediction says
whether the image is unlike every training photo. A multi-label graph (classify/task.py)
gives each prediction the labels over the thresholds tensorguess.json records (0.5 each
when it records none, or describes another graph).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from tensorguess.classify.layouts import GraphLayout, detect_layout
from tensorguess.classify.model_reader import (
    graph_metadata,
    novelty_threshold,
    read_graph,
    read_labels,
    read_model_bytes,
    refuse_damaged_graph,
    trained_precision,
)
from tensorguess.classify.prediction import BATCH_SIZE, Prediction
from tensorguess.classify.task import task_named, thresholds_of
from tensorguess.data.images import UnreadableImage, label_image_pixels, pixel_batches
from tensorguess.errors import TensorguessError, first_line
from tensorguess.features.engines import (
    INT8_ENGINE,
    OPENVINO_BATCH,
    cached_runner,
    compiled_runner,
    graph_runner,
    openvino_core,
    requested_engine,
    resolved_engine,
    run_ahead,
    tensorflow_runner,
)
from tensorguess.features.engines.int8 import INT8_FOLDER, load_int8_model


class Classifier:
    """A loaded retrained graph with its labels.

    `novelty_threshold` is None for a graph without a novelty score (an old tool's, or one
    trained before tensorguess had it): then predictions carry no novelty.
    """

    def __init__(
        self,
        graph_path: Path,
        labels_path: Path,
        overrides: dict | None = None,
        engine: str | None = None,
    ):
        self.graph_path, self.labels_path = Path(graph_path), Path(labels_path)
        data = read_model_bytes(self.graph_path)
        refuse_damaged_graph(self.graph_path, data)  # before the engines load, in a second
        self.labels = read_labels(self.labels_path)
        self.graph_sha256 = hashlib.sha256(data).hexdigest()
        metadata = graph_metadata(self.graph_path, self.graph_sha256)
        self.precision = trained_precision(metadata)
        threshold = novelty_threshold(metadata)
        overrides = {key: value for key, value in (overrides or {}).items() if value is not None}
        # The same graph bytes and flags always give the same layout and converted model.
        cache_key = hashlib.sha256(
            data + json.dumps(overrides, sort_keys=True).encode()
        ).hexdigest()
        int8 = self._int8_runner(engine) if not overrides else None
        cached = int8 or cached_runner(cache_key, engine, self.precision)
        if cached is not None:
            self._run, self.engine, notes = cached
            self.layout = GraphLayout.from_notes(notes)
            self._check_labels()
        else:
            graph_def = read_graph(self.graph_path, data)
            try:
                self.layout = detect_layout(graph_def, overrides)
            except TensorguessError as error:
                raise TensorguessError(f"{graph_path}: {error}") from None
            self._check_labels()
            self._run, self.engine = self._runner(graph_def, engine, cache_key)
        self.novelty_threshold = threshold if self.layout.novelty_layer else None
        self.task = task_named(self.layout.task, thresholds_of(metadata, self.labels))

    def _check_labels(self) -> None:
        """Refuse a labels file other than the one the graph was trained with (our graphs hold
        their labels): same count or not, its names would be another model's."""
        trained = list(self.layout.labels)
        if not trained or trained == self.labels:
            return
        shown = ", ".join(trained[:10]) + (", ..." if len(trained) > 10 else "")
        if len(trained) != len(self.labels):
            raise TensorguessError(
                f"{self.labels_path}: {len(self.labels)} labels, but the graph "
                f"{self.graph_path} scores {len(trained)} classes ({shown}); use the labels "
                "file written with this graph"
            )
        raise TensorguessError(
            f"{self.labels_path}: not the labels {self.graph_path.name} was trained with "
            f"({shown}); use the labels file written with this graph, or train again "
            "(a train that was interrupted while renaming its files leaves them apart)"
        )

    def _int8_runner(self, engine: str | None) -> tuple | None:
        """(run, "openvino-int8", layout notes) of the int8 model train kept beside this very
        graph, when `engine` asks for it or `auto` may use it; None otherwise."""
        asked = requested_engine(engine)
        if asked not in ("auto", INT8_ENGINE):
            return None
        if asked == "auto" and resolved_engine(asked, self.precision) == "tensorflow":
            return None
        folder = self.graph_path.parent / INT8_FOLDER
        found = load_int8_model(folder, self.graph_sha256) if openvino_core() else None
        if found is None:
            if asked == INT8_ENGINE:
                raise TensorguessError(
                    f"{folder}: no int8 model of {self.graph_path.name}; train with --engine "
                    "openvino-int8 (it keeps one when its validation accuracy allows)"
                )
            return None
        model, notes = found
        return compiled_runner(model, float32=False), INT8_ENGINE, notes["layout"]

    def _runner(self, graph_def, engine: str | None, cache_key: str):
        import tensorflow as tf

        layout = self.layout
        try:
            if layout.takes_bytes:  # the graph's own decoder: TensorFlow runs it
                run = tensorflow_runner(graph_def, layout.input_layer, layout.output_layer)
                return run, "tensorflow"
            outputs = (layout.output_layer, layout.novelty_layer)
            return graph_runner(
                graph_def,
                layout.input_layer,
                outputs if layout.novelty_layer else layout.output_layer,
                (layout.input_height, layout.input_width, 3),
                engine,
                self.precision,
                batch=OPENVINO_BATCH if layout.takes_batches else 1,
                cache_key=cache_key,
                notes=asdict(layout),
                whole_pixels=layout.takes_batches,
            )
        except (ValueError, KeyError, tf.errors.OpError) as error:
            raise TensorguessError(
                f"{self.graph_path}: cannot load the graph ({first_line(error)})"
            ) from None

    def _outputs(self, feed) -> tuple[np.ndarray, np.ndarray | None]:
        """(scores [B, labels], novelty [B] or None) for a batch."""
        outputs = self._run(feed)
        if self.layout.novelty_layer:
            scores, novelty = outputs
            return self._checked(scores), novelty.reshape(-1)
        return self._checked(outputs), None

    def _scores(self, feed) -> np.ndarray:
        return self._outputs(feed)[0]

    def _checked(self, scores: np.ndarray) -> np.ndarray:
        scores = scores.reshape(-1, scores.shape[-1])
        if scores.shape[-1] != len(self.labels):
            raise TensorguessError(
                f"{self.labels_path}: {len(self.labels)} labels, but the graph "
                f"{self.graph_path} scores {scores.shape[-1]} classes; use the labels file "
                "written with this graph"
            )
        return scores

    def classify(self, paths: Sequence[Path], batch_size: int = BATCH_SIZE) -> Iterator[Prediction]:
        """Score `paths` in order; an unreadable file gets a problem instead."""
        layout = self.layout
        if layout.takes_bytes:
            yield from self._classify_bytes(paths)
        elif layout.takes_batches:
            size = (layout.input_height, layout.input_width)
            batches = (
                (self._normalise(pixels), reasons)
                for pixels, reasons in pixel_batches(paths, size, batch_size)
            )
            start = 0
            for (scores, novelty), reasons in run_ahead(self._outputs, batches):
                for offset, reason in enumerate(reasons):
                    score = None if novelty is None else float(novelty[offset])
                    yield self._prediction(paths[start + offset], scores[offset], reason, score)
                start += len(scores)
        else:  # an old tool's graph, one image at a time as label_image.py fed it
            for path in paths:
                try:
                    pixels = label_image_pixels(path, (layout.input_height, layout.input_width))
                except UnreadableImage as problem:
                    yield Prediction(Path(path), None, str(problem))
                    continue
                scores = self._scores(self._normalise(pixels[None]))[0]
                yield self._prediction(Path(path), scores, "", None)

    @property
    def takes_pixels(self) -> bool:
        """Whether `predict_pixels` can score this graph: ours can, the old tools' cannot
        (they are fed label_image.py's own preprocessing, from a file)."""
        return self.layout.takes_batches

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the pixels `predict_pixels` takes."""
        return self.layout.input_height, self.layout.input_width

    def predict_pixels(self, pixels: np.ndarray, names: Sequence[str | Path]) -> list[Prediction]:
        """One prediction per name for pixels decoded by `images.load_pixels` (uint8
        [B, height, width, 3] of `image_size`), in any number: for callers that decode
        themselves, such as the HTTP server. Needs `takes_pixels`."""
        if not self.takes_pixels:
            raise TensorguessError(
                f"{self.graph_path}: an old tool's graph, which takes files, not pixels"
            )
        scores, novelty = self._outputs(self._normalise(pixels))
        return [
            self._prediction(Path(name), row, "", None if novelty is None else float(novelty[i]))
            for i, (name, row) in enumerate(zip(names, scores, strict=True))
        ]

    def _normalise(self, pixels: np.ndarray) -> np.ndarray:
        layout = self.layout
        if layout.takes_batches:
            return pixels  # our graphs take 0-255 as they are; the engine converts to float
        return (pixels.astype(np.float32) - layout.input_mean) / layout.input_std

    def _prediction(
        self, path: Path, scores: np.ndarray, problem: str, novelty: float | None
    ) -> Prediction:
        if problem:
            return Prediction(Path(path), None, problem)
        given = self.task.answer(scores, self.labels)
        if novelty is None or self.novelty_threshold is None:
            return Prediction(Path(path), scores, labels=given)
        unknown = novelty > self.novelty_threshold
        return Prediction(Path(path), scores, "", novelty, unknown, given)

    def _classify_bytes(self, paths: Sequence[Path]) -> Iterator[Prediction]:
        import tensorflow as tf

        for path in paths:
            try:
                data = Path(path).read_bytes()
            except OSError as error:
                yield Prediction(Path(path), None, f"cannot read ({error.strerror})")
                continue
            try:
                yield self._prediction(Path(path), self._scores(data)[0], "", None)
            except tf.errors.OpError as error:  # the graph's own decoder refused the bytes
                reason = first_line(error)
                yield Prediction(Path(path), None, f"the model cannot decode it ({reason})")
