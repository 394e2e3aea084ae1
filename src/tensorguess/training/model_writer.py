"""What train writes into TF_FILES: the frozen 2016-contract graph, the labels, a SavedModel
and tensorguess.json (classify/model_reader.py reads them back).

`retrained_graph.pb` keeps the contract of the original tools: feed a scalar string of
encoded image bytes to `DecodeJpeg/contents:0`, read the softmax `final_result:0`
([1, N]). Decoding and resizing happen inside the graph. Between the two, a
`input_pixels` placeholder-with-default ([None, S, S, 3] float RGB in 0-255) lets our
own tools feed decoded batches to the same graph. Beside the softmax, `novelty:0` ([B])
says how unlike every training photo each image is (features/novelty.py); its threshold is in
tensorguess.json.

A multi-label model's `final_result:0` holds a sigmoid score per label instead ([1, N], each
from 0 to 1, not adding up to 1), and its graph a constant `tensorguess_task`
("multi-label") beside its labels; tensorguess.json keeps the task and, once the pipeline has
chosen them on the validation photos, each label's threshold (classify/task.py).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from tensorguess import __version__
from tensorguess.classify.model_reader import read_metadata
from tensorguess.classify.task import SINGLE, TASK_NODE, Task
from tensorguess.features.backbones import Backbone
from tensorguess.features.engines import freeze_pixels_function
from tensorguess.features.engines.tensorflow import save_graph_signatures
from tensorguess.features.novelty import NoveltyModel, novelty_tensor
from tensorguess.files import replace_directory_atomic, write_bytes_atomic, write_text_atomic
from tensorguess.model_files import (
    GRAPH_FILE,
    INPUT_BYTES,
    INPUT_PIXELS,
    LABELS_FILE,
    LABELS_NODE,
    METADATA_FILE,
    NOVELTY,
    OUTPUT,
    SAVED_MODEL_DIR,
)
from tensorguess.quiet import quiet_tensorflow_logger
from tensorguess.training.head import TrainedHead


@dataclass(frozen=True)
class ExportedModel:
    """Paths of what `export_model` wrote."""

    graph: Path
    labels: Path
    saved_model: Path
    metadata: Path


def classifier_function(
    backbone: Backbone, head: TrainedHead, novelty: NoveltyModel, flip_average: bool = False
) -> tf.types.experimental.PolymorphicFunction:
    """pixels [B, S, S, 3] float32 in 0-255 -> (scores [B, N], novelty [B]), as one
    tf.function; the scores are the head's task's (softmax, or a sigmoid per label).

    With `flip_average`, a photo's scores are the mean of its own and its mirror image's:
    more accurate on photos whose subject may face either way, at twice the cost (the
    novelty stays the photo's own).
    """
    size = backbone.image_size
    layers = [(tf.constant(kernel), tf.constant(bias)) for kernel, bias in head.layers]

    def scores(features):
        activations = features
        for depth, (kernel, bias) in enumerate(layers):
            activations = tf.matmul(activations, kernel) + bias
            if depth < len(layers) - 1:
                activations = tf.nn.relu(activations)
        return head.task.activate_tensor(activations)

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="pixels")])
    def classify(pixels):
        features = backbone.features(pixels)
        probabilities = scores(features)
        if flip_average:
            mirrored = scores(backbone.features(tf.reverse(pixels, axis=[2])))
            probabilities = (probabilities + mirrored) / 2
        return probabilities, novelty_tensor(novelty, features)

    return classify


def decode_for_graph(contents: tf.Tensor, size: int) -> tf.Tensor:
    """Encoded bytes (scalar string) -> float32 [S, S, 3] pixels, in TensorFlow ops."""
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image = tf.cast(image, tf.float32)
    return tf.image.resize(image, [size, size], method="bilinear", antialias=True)


def _imported_outputs(
    core, core_input: str, core_outputs: tuple[str, str], pixels: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """The frozen classifier `core` imported into the graph being built, fed `pixels`: its
    (scores, novelty)."""
    scores, novelty = tf.graph_util.import_graph_def(
        core,
        input_map={f"{core_input}:0": pixels},
        return_elements=[f"{name}:0" for name in core_outputs],
        name="classifier",
    )
    return scores, novelty


def frozen_graph(
    core: tf.compat.v1.GraphDef,
    core_input: str,
    core_outputs: tuple[str, str],
    size: int,
    labels: list[str],
    task: Task = SINGLE,
):
    """The frozen GraphDef with the 2016 tensor names around the frozen classifier `core`.

    It also holds its own `labels` (a constant no output depends on), so that a labels file
    that does not belong with the graph is caught when the model is loaded, and a
    multi-label one its task.
    """
    graph = tf.Graph()
    with graph.as_default():
        tf.constant(labels, dtype=tf.string, name=LABELS_NODE)
        if task != SINGLE:
            tf.constant(task.name, dtype=tf.string, name=TASK_NODE)
        contents = tf.compat.v1.placeholder(tf.string, shape=[], name=INPUT_BYTES)
        decoded = tf.expand_dims(decode_for_graph(contents, size), 0)
        pixels = tf.compat.v1.placeholder_with_default(
            decoded, shape=[None, size, size, 3], name=INPUT_PIXELS
        )
        scores, novelty = _imported_outputs(core, core_input, core_outputs, pixels)
        tf.identity(scores, name=OUTPUT)
        tf.identity(novelty, name=NOVELTY)
    return graph.as_graph_def()


def write_saved_model(
    folder: Path,
    core: tf.compat.v1.GraphDef,
    core_input: str,
    core_outputs: tuple[str, str],
    size: int,
    labels: list[str],
) -> None:
    """A SavedModel of the frozen classifier `core`, with no variables to restore.

    Signatures: `serving_default` takes encoded images (string [B]) and returns `scores`,
    `label` and `novelty`; `classify_pixels` takes `pixels` [B, S, S, 3] float32 in 0-255
    and returns `scores` and `novelty`. Built as
    a TF1 graph around the already frozen classifier, it costs a fraction of a second,
    where saving a `tf.Module` would trace the Keras backbone again.
    """
    with quiet_tensorflow_logger():  # TF1's signature helpers warn that they are TF1's
        _build_saved_model(folder, core, core_input, core_outputs, size, labels)


def _build_saved_model(folder, core, core_input, core_outputs, size, labels) -> None:
    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        images = tf1.placeholder(tf.string, [None], name="images")
        decoded = tf.map_fn(
            lambda contents: decode_for_graph(contents, size),
            images,
            fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
        )
        pixels = tf1.placeholder_with_default(decoded, [None, size, size, 3], name="pixels")
        scores, novelty = _imported_outputs(core, core_input, core_outputs, pixels)
        label = tf.gather(tf.constant(labels), tf.argmax(scores, axis=1))
        save_graph_signatures(
            folder,
            {
                "serving_default": tf1.saved_model.predict_signature_def(
                    {"images": images}, {"scores": scores, "label": label, "novelty": novelty}
                ),
                "classify_pixels": tf1.saved_model.predict_signature_def(
                    {"pixels": pixels}, {"scores": scores, "novelty": novelty}
                ),
            },
        )


def update_metadata(tf_files: Path, **fields) -> None:
    """Set `fields` in tensorguess.json (atomically), keeping the rest."""
    metadata = {**read_metadata(tf_files), **fields}
    write_text_atomic(Path(tf_files) / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")


def export_model(
    tf_files: Path,
    backbone: Backbone,
    backbone_spec: str,
    head: TrainedHead,
    novelty: NoveltyModel,
    labels: list[str],
    precision: str,
    details: dict,
    flip_average: bool = False,
) -> ExportedModel:
    """Write the graph, labels, SavedModel and metadata into `tf_files`, all or nothing.

    `precision` is the arithmetic of the features the head learned from (`bf16`, `f32`):
    guess and guessDir run the graph in it by default. `novelty` (fitted on the features
    this backbone computes) becomes the graph's `novelty:0`, its threshold metadata.

    Everything is written in full under temporary names first; only then are the four
    renamed into place, back to back, the graph and its labels first. An interrupted run
    leaves the previous model whole, except in the instant between those renames: then the
    graph holds its own labels, and loading it refuses a labels file that is not those
    (classify/classifier.py) rather than print another model's names.
    """
    tf_files = Path(tf_files)
    size = backbone.image_size
    core, core_input, core_outputs = freeze_pixels_function(
        classifier_function(backbone, head, novelty, flip_average), size
    )
    graph = frozen_graph(core, core_input, core_outputs, size, labels, head.task)
    graph_bytes = graph.SerializeToString()
    metadata = {
        "format": 1,
        "tensorguess_version": __version__,
        "backbone": backbone_spec,
        "backbone_cache_key": backbone.cache_key,
        "image_size": backbone.image_size,
        "precision": precision,
        "graph_sha256": hashlib.sha256(graph_bytes).hexdigest(),
        "labels": labels,
        "test_accuracy": head.test_accuracy,
        "test_count": head.test_count,
        "trained_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "graph_inputs": {"bytes": f"{INPUT_BYTES}:0", "pixels": f"{INPUT_PIXELS}:0"},
        "graph_output": f"{OUTPUT}:0",
        "head": {"layers": [list(np.shape(kernel)) for kernel, _ in head.layers]},
        "novelty": novelty.describe(),
        "flip_average": flip_average,
        **head.task.metadata(labels),
        **details,
    }
    with tempfile.TemporaryDirectory(prefix=".tmp-export.", dir=tf_files) as scratch:
        built = Path(scratch)
        write_saved_model(built / SAVED_MODEL_DIR, core, core_input, core_outputs, size, labels)
        write_bytes_atomic(built / GRAPH_FILE, graph_bytes)
        write_text_atomic(built / LABELS_FILE, "".join(f"{label}\n" for label in labels))
        write_text_atomic(built / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")
        for name in (GRAPH_FILE, LABELS_FILE, METADATA_FILE):
            os.replace(built / name, tf_files / name)
        replace_directory_atomic(built / SAVED_MODEL_DIR, tf_files / SAVED_MODEL_DIR)
    return ExportedModel(
        graph=tf_files / GRAPH_FILE,
        labels=tf_files / LABELS_FILE,
        saved_model=tf_files / SAVED_MODEL_DIR,
        metadata=tf_files / METADATA_FILE,
    )
