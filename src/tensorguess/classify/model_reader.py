"""Reading what train.sh wrote: the graph, the labels and tensorguess.json.

Every reader of tensorguess.json goes through `read_metadata`; `graph_metadata` trusts it
only when it names the very graph beside it (its SHA-256), since a graph copied without its
metadata, or an old tool's graph, must not be described by another model's facts.
"""

from __future__ import annotations

import json
from pathlib import Path

from tensorguess.errors import TensorguessError
from tensorguess.features.engines import FLOAT32
from tensorguess.model_files import METADATA_FILE
from tensorguess.quiet import import_tensorflow_quietly


def read_model_bytes(path: Path) -> bytes:
    """The model file's bytes, or one line saying why they cannot be read."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise TensorguessError(f"{path}: model not found; train one first with train.sh") from None
    except OSError as error:
        raise TensorguessError(f"{path}: cannot read the model ({error.strerror})") from None


_TRAIN_AGAIN = "train again with train.sh"


def refuse_damaged_graph(path: Path, data: bytes) -> None:
    """Say in one line that `data`, read from `path`, is no graph when it is empty or not
    protocol-buffer wire format at its top level (a cut file, a photo renamed): without
    TensorFlow, whose import would take longer than the answer."""
    if not data:
        raise TensorguessError(f"{path}: an empty file, not a TensorFlow graph; {_TRAIN_AGAIN}")
    if not _well_formed(data):
        raise TensorguessError(
            f"{path}: not a TensorFlow graph (truncated or corrupt?); {_TRAIN_AGAIN}"
        )


def _well_formed(data: bytes) -> bool:
    """Whether every top-level field of `data` has a valid tag and ends within it. A frozen
    graph or a SavedModel always does; a file cut short almost never (its last field runs
    past the end), nor most files of other kinds."""
    position, end = 0, len(data)
    while position < end:
        tag, position = _varint(data, position)
        if tag is None or tag >> 3 == 0:
            return False
        wire_type = tag & 7
        if wire_type == 0:
            value, position = _varint(data, position)
            if value is None:
                return False
        elif wire_type == 2:
            length, position = _varint(data, position)
            if length is None:
                return False
            position += length
        elif wire_type in (1, 5):
            position += 8 if wire_type == 1 else 4
        else:  # groups (3, 4) are in neither message; 6 and 7 are not wire types
            return False
    return position == end


def _varint(data: bytes, position: int) -> tuple[int | None, int]:
    """The varint at `position` and where it ends; None when it is cut or over 10 bytes."""
    value = 0
    for shift in range(0, 70, 7):
        if position >= len(data):
            return None, position
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
    return None, position


def read_graph(path: Path, data: bytes):
    """Parse the frozen GraphDef `data` read from `path`, or say in one line why it is not one."""
    refuse_damaged_graph(path, data)
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
            f"{path}: not a TensorFlow graph (truncated or corrupt?); {_TRAIN_AGAIN}"
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


def read_metadata(folder: Path) -> dict:
    """The tensorguess.json train.sh wrote into `folder`, or {} when there is none (or it is
    not a JSON object): the one reader of that file."""
    try:
        metadata = json.loads((Path(folder) / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return metadata if isinstance(metadata, dict) else {}


def graph_metadata(graph_path: Path, graph_sha256: str) -> dict:
    """tensorguess.json beside the graph if it names this very graph (`graph_sha256`, its
    file's SHA-256); else {} (an old tool's graph, an older export, a graph copied
    without its metadata)."""
    metadata = read_metadata(Path(graph_path).parent)
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
