"""Which classifier a command gets: the one train.sh wrote into TF_FILES (or the graph and
labels named by --graph/--labels), or an exported file given with --model."""

from __future__ import annotations

from pathlib import Path

from tensorguess.classify.classifier import Classifier
from tensorguess.classify.exported import ExportedClassifier
from tensorguess.errors import TensorguessError
from tensorguess.model_files import GRAPH_FILE, LABELS_FILE


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
        return ExportedClassifier(model)
    if graph is None and tf_files is None:
        raise TensorguessError("give TF_FILES (the folder train.sh wrote) or --graph")
    graph = Path(graph) if graph else Path(tf_files) / GRAPH_FILE
    labels = Path(labels) if labels else graph.with_name(LABELS_FILE)
    return Classifier(graph, labels, overrides, engine)
