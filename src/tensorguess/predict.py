"""Prediction: load a retrained graph (ours or an old tool's) and score images in batches.

Ours get the decoder that trained them (images.load_pixels) and, under `--engine auto`, the
precision their head was trained on (tensorguess.json, when it names this very graph). An
old tool's graph gets label_image.py's own preprocessing and float32 arithmetic, so it
answers as the old tool did. Our graphs also give each image a novelty score (`novelty:0`,
novelty.py); with the threshold tensorguess.json records, a prediction says whether the image
is unlike every training photo.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from tensorguess.engines import (
    FLOAT32,
    INT8_ENGINE,
    OPENVINO_BATCH,
    cached_runner,
    compiled_runner,
    graph_runner,
    import_tensorflow_quietly,
    openvino_core,
    requested_engine,
    resolved_engine,
    run_ahead,
    tensorflow_runner,
)
from tensorguess.engines.int8 import INT8_FOLDER, load_int8_model
from tensorguess.errors import TensorguessError, first_line
from tensorguess.images import UnreadableImage, label_image_pixels, pixel_batches
from tensorguess.model_files import (
    GRAPH_FILE,
    INPUT_BYTES,
    INPUT_PIXELS,
    LABELS_FILE,
    METADATA_FILE,
    NOVELTY,
    OUTPUT,
)

BATCH_SIZE = 64


@dataclass(frozen=True)
class GraphLayout:
    """Where to feed a graph and how it wants its input (label_image.py's flags)."""

    input_layer: str
    output_layer: str = OUTPUT
    input_height: int = 0
    input_width: int = 0
    input_mean: float = 0.0
    input_std: float = 1.0
    takes_bytes: bool = False
    takes_batches: bool = False
    novelty_layer: str = ""  # our graphs' novelty score, read beside the softmax


@dataclass(frozen=True)
class Prediction:
    """The scores of one image (aligned with the labels), or why there are none.

    `novelty` says how unlike every training photo the image is (None when the model has no
    such score); `unknown` whether it is past the model's threshold.
    """

    path: Path
    scores: np.ndarray | None
    problem: str = ""
    novelty: float | None = None
    unknown: bool | None = None

    def ranked(self, labels: Sequence[str], top_k: int | None = None) -> list[tuple[str, float]]:
        """(label, score) pairs, best first."""
        assert self.scores is not None
        order = np.argsort(-self.scores, kind="stable")[:top_k]
        return [(labels[i], float(self.scores[i])) for i in order]

    def to_json(self, labels: Sequence[str], top_k: int | None = None) -> dict:
        """The prediction as `guess --json` prints it: labels best first, or the error."""
        if self.scores is None:
            return {"image": str(self.path), "error": self.problem}
        ranked = self.ranked(labels, top_k)
        answer = {
            "image": str(self.path),
            "predictions": [{"label": label, "score": score} for label, score in ranked],
        }
        if self.novelty is not None:
            answer.update(novelty=self.novelty, unknown=self.unknown)
        return answer


class Scorer(Protocol):
    """What a sort needs of a classifier: its labels, the file it came from, its novelty
    threshold (None without one), and a prediction for each path (in any order).
    `Classifier` computes them here; `cluster.ClusterClassifier` on Ray;
    `export.runtimes.ExportedClassifier` from a .tflite or .onnx file."""

    labels: list[str]
    graph_path: Path
    novelty_threshold: float | None

    def classify(
        self, paths: Sequence[Path], batch_size: int = BATCH_SIZE
    ) -> Iterator[Prediction]: ...


def detect_layout(graph_def, overrides: dict | None = None) -> GraphLayout:
    """Recognise the input of our graphs and of the old tools' graphs; flags override."""
    nodes = {node.name: node for node in graph_def.node}
    overrides = {key: value for key, value in (overrides or {}).items() if value is not None}
    if INPUT_PIXELS in nodes:
        height, width = _placeholder_size(nodes[INPUT_PIXELS], 0)
        layout = GraphLayout(
            INPUT_PIXELS,
            input_height=height,
            input_width=width,
            takes_batches=True,
            novelty_layer=NOVELTY if NOVELTY in nodes else "",
        )
    elif "Mul" in nodes and "input_layer" not in overrides:
        layout = GraphLayout(
            "Mul", input_height=299, input_width=299, input_mean=128, input_std=128
        )
    elif "input" in nodes and "input_layer" not in overrides:
        height, width = _placeholder_size(nodes["input"], 224)
        layout = GraphLayout(
            "input", input_height=height, input_width=width, input_mean=128, input_std=128
        )
    elif "Placeholder" in nodes and "input_layer" not in overrides:
        height, width = _placeholder_size(nodes["Placeholder"], 224)
        layout = GraphLayout("Placeholder", input_height=height, input_width=width, input_std=255)
    else:
        layout = GraphLayout(INPUT_BYTES, takes_bytes=True)
    layout = replace(layout, **overrides)
    if {"input_layer", "output_layer"} & set(overrides):  # not our graph's usual path
        layout = replace(layout, novelty_layer="")
    if "input_layer" in overrides:
        takes_bytes = nodes.get(layout.input_layer) is not None and _is_string(
            nodes[layout.input_layer]
        )
        layout = replace(layout, takes_bytes=takes_bytes, takes_batches=False)
    for name in (layout.input_layer, layout.output_layer):
        if name not in nodes:
            raise TensorguessError(
                f"the graph has no tensor {name!r}; name the right one with "
                "--input_layer / --output_layer"
            )
    if not layout.takes_bytes and not (layout.input_height and layout.input_width):
        raise TensorguessError("give the input size with --input_height and --input_width")
    return layout


def _placeholder_size(node, default: int) -> tuple[int, int]:
    dims = [dim.size for dim in node.attr["shape"].shape.dim]
    if len(dims) == 4 and dims[1] > 0 and dims[2] > 0:
        return dims[1], dims[2]
    return default, default


def _is_string(node) -> bool:
    from tensorflow.core.framework import types_pb2

    return node.attr["dtype"].type == types_pb2.DT_STRING


def read_model_bytes(path: Path) -> bytes:
    """The model file's bytes, or one line saying why they cannot be read."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise TensorguessError(f"{path}: model not found; train one first with train.sh") from None
    except OSError as error:
        raise TensorguessError(f"{path}: cannot read the model ({error.strerror})") from None


def read_graph(path: Path, data: bytes):
    """Parse the frozen GraphDef `data` read from `path`, or say in one line why it is not one."""
    import_tensorflow_quietly()
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError):
        graph_def.Clear()
    if not graph_def.node:
        if _is_saved_model(data):
            raise TensorguessError(
                f"{path}: a SavedModel's saved_model.pb, not a frozen graph; give "
                "retrained_graph.pb (written by train.sh beside saved_model/) with --graph"
            )
        raise TensorguessError(
            f"{path}: not a TensorFlow graph (truncated or corrupt?); train again with train.sh"
        )
    return graph_def


def _is_saved_model(data: bytes) -> bool:
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError):
        return False
    return any(meta_graph.graph_def.node for meta_graph in saved_model.meta_graphs)


def read_labels(path: Path) -> list[str]:
    """One label per line, in the graph's output order."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TensorguessError(
            f"{path}: labels file not found; train again with train.sh"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise TensorguessError(f"{path}: cannot read the labels ({error})") from None
    labels = [line.rstrip("\r") for line in text.split("\n")]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise TensorguessError(f"{path}: the labels file is empty; train again with train.sh")
    return labels


def graph_metadata(graph_path: Path, graph_sha256: str) -> dict:
    """tensorguess.json beside the graph if it names this very graph (`graph_sha256`, its
    file's SHA-256); else {} (an old tool's graph, an older export, a graph copied
    without its metadata)."""
    try:
        metadata = json.loads((graph_path.with_name(METADATA_FILE)).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(metadata, dict):
        return {}
    if metadata.get("graph_sha256") != graph_sha256:
        return {}
    return metadata


def trained_precision(metadata: dict) -> str:
    """The precision the graph's head was trained on (its `graph_metadata`); else float32."""
    return str(metadata.get("precision") or FLOAT32)


def novelty_threshold(metadata: dict) -> float | None:
    """The novelty score past which an image is unlike every training photo, if recorded."""
    novelty = metadata.get("novelty")
    threshold = novelty.get("threshold") if isinstance(novelty, dict) else None
    return float(threshold) if isinstance(threshold, int | float) else None


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
            self.layout = GraphLayout(**notes)
        else:
            graph_def = read_graph(self.graph_path, data)
            try:
                self.layout = detect_layout(graph_def, overrides)
            except TensorguessError as error:
                raise TensorguessError(f"{graph_path}: {error}") from None
            self._run, self.engine = self._runner(graph_def, engine, cache_key)
        self.novelty_threshold = threshold if self.layout.novelty_layer else None

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
                yield Prediction(Path(path), self._scores(self._normalise(pixels[None]))[0])

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
        if novelty is None or self.novelty_threshold is None:
            return Prediction(Path(path), scores)
        return Prediction(Path(path), scores, "", novelty, novelty > self.novelty_threshold)

    def _classify_bytes(self, paths: Sequence[Path]) -> Iterator[Prediction]:
        import tensorflow as tf

        for path in paths:
            try:
                data = Path(path).read_bytes()
            except OSError as error:
                yield Prediction(Path(path), None, f"cannot read ({error.strerror})")
                continue
            try:
                yield Prediction(Path(path), self._scores(data)[0])
            except tf.errors.OpError as error:  # the graph's own decoder refused the bytes
                reason = first_line(error)
                yield Prediction(Path(path), None, f"the model cannot decode it ({reason})")


def load_classifier(
    tf_files: Path | None,
    graph: Path | None = None,
    labels: Path | None = None,
    overrides: dict | None = None,
    engine: str | None = None,
    model: Path | None = None,
):
    """The classifier in `tf_files` (or the `graph`/`labels` files given explicitly), or the
    exported `model` file (.tflite, .onnx), which holds its labels."""
    if model is not None:
        flags = {"graph": graph, "labels": labels, **(overrides or {})}
        given = [f"--{name}" for name, value in flags.items() if value is not None]
        if given:
            raise TensorguessError(
                f"--model holds its own labels and input size: drop {', '.join(given)}"
            )
        from tensorguess.export.runtimes import ExportedClassifier

        return ExportedClassifier(model)
    if graph is None and tf_files is None:
        raise TensorguessError("give TF_FILES (the folder train.sh wrote) or --graph")
    graph = Path(graph) if graph else Path(tf_files) / GRAPH_FILE
    labels = Path(labels) if labels else graph.with_name(LABELS_FILE)
    return Classifier(graph, labels, overrides, engine)
