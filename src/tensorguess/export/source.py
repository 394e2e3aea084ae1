"""What an export starts from: the classifier train.sh wrote into TF_FILES, read back.

Every format is converted from the frozen graph's pixel part (`input_pixels` ->
`final_result`), whose weights are constants. The photos in TF_FILES/data serve twice:
the training split calibrates int8 models, the test split measures what quantising cost.
A multi-label model (its graph names its task) is read with its thresholds, and its photos
with their labels (TF_FILES/labels.csv, or the label folders each photo is in).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tensorguess.classify.model_reader import (
    graph_metadata,
    read_graph,
    read_labels,
    read_model_bytes,
)
from tensorguess.classify.task import SINGLE, TASK_NODE, Task, task_named, thresholds_of
from tensorguess.data.dataset import (
    LABELS_CSV,
    TEST,
    TESTING_PERCENTAGE,
    TRAIN,
    VALIDATION_PERCENTAGE,
    LabelledImage,
    scan_data,
)
from tensorguess.errors import TensorguessError
from tensorguess.model_files import GRAPH_FILE, INPUT_PIXELS, LABELS_FILE, OUTPUT

# int8 calibration: a few hundred training photos, as many of each label as there are.
CALIBRATION_PHOTOS = 300
# Photos every exported file is checked on against TensorFlow before it is written.
CHECK_PHOTOS = 8


@dataclass
class TrainedModel:
    """The classifier of a TF_FILES folder: its frozen graph, labels and tensorguess.json."""

    tf_files: Path
    graph_def: object
    labels: list[str]
    image_size: int
    # tensorguess.json when it describes this very graph, else empty.
    metadata: dict = field(default_factory=dict)
    task: Task = SINGLE
    _reference: object = field(default=None, repr=False)

    def pixel_function(self, batch: int | None, dtype: str = "float32"):
        """A tf.function: pixels [batch, S, S, 3] (RGB 0-255, `dtype`) -> scores.

        Its output is a dict {"scores": [batch, N]}; the weights inside are constants, so a
        converter has no variable left to lose.
        """
        import tensorflow as tf

        graph_def = self.graph_def

        def import_graph():
            tf.compat.v1.import_graph_def(graph_def, name="")

        wrapped = tf.compat.v1.wrap_function(import_graph, [])
        classify = wrapped.prune(
            feeds=[wrapped.graph.get_tensor_by_name(f"{INPUT_PIXELS}:0")],
            fetches=[wrapped.graph.get_tensor_by_name(f"{OUTPUT}:0")],
        )
        size = self.image_size
        spec = tf.TensorSpec([batch, size, size, 3], getattr(tf, dtype), name="image")

        @tf.function(input_signature=[spec])
        def scores(image):
            return {"scores": classify(tf.cast(image, tf.float32))[0]}

        return scores

    def reference_scores(self, pixels: np.ndarray) -> np.ndarray:
        """TensorFlow's float32 scores of `pixels` [B, S, S, 3]: what every export must match."""
        import tensorflow as tf

        if self._reference is None:
            self._reference = self.pixel_function(None)
        return self._reference(tf.constant(np.float32(pixels)))["scores"].numpy()

    def describe(self) -> str:
        """One sentence on what the model does, for the metadata of the exported files."""
        shown = ", ".join(self.labels[:20]) + (", ..." if len(self.labels) > 20 else "")
        text = f"Labels a photo as one of {len(self.labels)}: {shown}."
        if self.task.multi_label:
            text = (
                f"Gives a photo any of {len(self.labels)} labels (none included), each with "
                f"its own score: {shown}."
            )
        backbone = self.metadata.get("backbone")
        if backbone:
            text += f" Retrained {backbone} (tensorguess)"
            accuracy, count = self.metadata.get("test_accuracy"), self.metadata.get("test_count")
            micro_f1 = self.metadata.get("test_micro_f1")
            if self.task.multi_label and micro_f1 is not None and count:
                text += f", micro-F1 {micro_f1:.3f} on {count} test photos"
            elif accuracy is not None and count:
                text += f", {accuracy:.1%} on {count} test photos"
            text += "."
        return text


def read_trained_model(tf_files: Path) -> TrainedModel:
    """The classifier in `tf_files`, or one line saying why there is none to export."""
    tf_files = Path(tf_files)
    if not tf_files.is_dir():
        raise TensorguessError(
            f"{tf_files}: folder not found; give the folder train.sh wrote the classifier into"
        )
    graph_path = tf_files / GRAPH_FILE
    data = read_model_bytes(graph_path)
    labels = read_labels(tf_files / LABELS_FILE)
    graph_def = read_graph(graph_path, data)
    nodes = {node.name: node for node in graph_def.node}
    if INPUT_PIXELS not in nodes or OUTPUT not in nodes:
        raise TensorguessError(
            f"{graph_path}: made by an older tool (it has no {INPUT_PIXELS} tensor); export "
            "needs a model trained by tensorguess: train one with train.sh"
        )
    dims = [dim.size for dim in nodes[INPUT_PIXELS].attr["shape"].shape.dim]
    metadata = graph_metadata(graph_path, hashlib.sha256(data).hexdigest())
    task_node = nodes.get(TASK_NODE)
    task = task_named(
        task_node.attr["value"].tensor.string_val[0].decode() if task_node else None,
        thresholds_of(metadata, labels),
    )
    model = TrainedModel(tf_files, graph_def, labels, dims[1], metadata, task)
    classes = model.reference_scores(np.zeros((1, dims[1], dims[2], 3), np.uint8)).shape[-1]
    if classes != len(labels):
        raise TensorguessError(
            f"{tf_files / LABELS_FILE}: {len(labels)} labels, but {graph_path} scores {classes} "
            "classes; train again with train.sh"
        )
    return model


@dataclass
class Photos:
    """TF_FILES/data's photos by the split training gave them: calibration and test photos
    (with their true label, or labels for a multi-label model)."""

    calibration: list[LabelledImage]
    test: list[tuple[Path, str | tuple[str, ...]]]


def model_photos(model: TrainedModel, calibration_photos: int = CALIBRATION_PHOTOS) -> Photos:
    """Up to `calibration_photos` training photos, as many of each label as there are,
    and the test split.

    The split is training's own (tensorguess.json keeps its percentages). With no
    TF_FILES/data left, both are empty.
    """
    data = model.tf_files / "data"
    if not data.is_dir():
        return Photos([], [])
    multi_label = model.task.multi_label
    try:
        scan = scan_data(
            data,
            model.metadata.get("validation_percentage", VALIDATION_PERCENTAGE),
            model.metadata.get("testing_percentage", TESTING_PERCENTAGE),
            least_labels=1,
            multi_label=multi_label,
            labels_csv=model.tf_files / LABELS_CSV,
        )
    except TensorguessError:
        return Photos([], [])
    known = set(model.labels)
    usable = [image for image in scan.images if set(image.labels or ()) <= known]
    by_label: dict[str, list[LabelledImage]] = {}
    for image in usable:
        if image.split == TRAIN:  # grouped by the first label (multi-label: maybe none)
            by_label.setdefault(image.label, []).append(image)
    # Round-robin over the labels, each in digest order (stable, and unrelated to file names).
    queues = [sorted(images, key=lambda image: image.digest) for images in by_label.values()]
    calibration: list[LabelledImage] = []
    for rank in range(max(map(len, queues), default=0)):
        calibration += [queue[rank] for queue in queues if rank < len(queue)]
    test = [
        (image.path, image.labels if multi_label else image.label)
        for image in usable
        if image.split == TEST
    ]
    return Photos(calibration[:calibration_photos], test)


def check_pixels(model: TrainedModel, photos: Photos) -> np.ndarray:
    """uint8 pixels every exported file is checked on: training photos, else fixed noise."""
    from tensorguess.data.images import UnreadableImage, load_pixels

    size = model.image_size
    pixels = []
    for image in photos.calibration[:CHECK_PHOTOS]:
        try:
            pixels.append(load_pixels(image.path, size))
        except UnreadableImage:
            continue
    if not pixels:
        noise = np.random.default_rng(0).integers(0, 256, (4, size, size, 3))
        return noise.astype(np.uint8)
    return np.stack(pixels)
