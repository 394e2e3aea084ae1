"""Where to feed a retrained graph and how it wants its input: ours, and the old tools'.

Ours take batches of decoded pixels (`input_pixels`) and give a novelty score beside the
softmax; the old tools' graphs (retrain.py's Inception v3, TensorFlow for Poets' MobileNet,
TF-Hub retrain.py) are recognised by their input tensor, and label_image.py's flags override
what is recognised.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tensorguess.classify.task import TASK_NODE
from tensorguess.errors import TensorguessError
from tensorguess.model_files import INPUT_BYTES, INPUT_PIXELS, LABELS_NODE, NOVELTY, OUTPUT


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
    labels: tuple[str, ...] = ()  # the labels our graphs were trained with; () for the others
    task: str = ""  # "multi-label" for our multi-label graphs; "" for single-label ones

    @classmethod
    def from_notes(cls, notes: dict) -> GraphLayout:
        """The layout kept as JSON beside a converted model (`dataclasses.asdict` of one)."""
        return cls(**{**notes, "labels": tuple(notes.get("labels", ()))})


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
            labels=_embedded_labels(nodes.get(LABELS_NODE)),
            task=next(iter(_embedded_labels(nodes.get(TASK_NODE))), ""),
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


def _embedded_labels(node) -> tuple[str, ...]:
    """The strings a constant of our graphs holds (`LABELS_NODE`, `TASK_NODE`); () for a
    graph without it."""
    if node is None:
        return ()
    return tuple(value.decode("utf-8") for value in node.attr["value"].tensor.string_val)


def _placeholder_size(node, default: int) -> tuple[int, int]:
    dims = [dim.size for dim in node.attr["shape"].shape.dim]
    if len(dims) == 4 and dims[1] > 0 and dims[2] > 0:
        return dims[1], dims[2]
    return default, default


def _is_string(node) -> bool:
    from tensorflow.core.framework import types_pb2

    return node.attr["dtype"].type == types_pb2.DT_STRING
