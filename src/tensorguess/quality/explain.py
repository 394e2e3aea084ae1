"""Why the model answered: heat maps of where in a photo it found the evidence for a label.

HiResCAM (Draelos and Carin, 2020) on two blocks of the backbone, multiplied: the block its
global average pool reads, where each position's share of the label's evidence is exact for
our heads (the gradient times the activation, summed over channels, negatives cut), and the
last block before the network's last downsampling, with twice the resolution (14 x 14
positions at 224 px, 17 at 260). Each map is scaled to [0, 1] and stretched smoothly to the
photo; their product keeps what both blocks place. The evidence is the label's log-odds
against the other labels (what all logits share is evidence for none of them).

Measured on photos whose only evidence is one drawn object in a ninth of the photo, at a
random spot on clutter (three sets of 40: docs/explain.md; tests/test_explain.py holds it),
the photos with at least half the map on the object: this product 40, 40 and 40; HiResCAM on
the finer block alone 39, 40, 33; Grad-CAM on it 35, 31, 33; Grad-CAM on the pooled block
(the usual choice) 0, 0, 4; LayerCAM and Grad-CAM++ fewer still.

TensorFlow computes it on the frozen graph in TF_FILES, whatever engine labels the photos
(OpenVINO gives scores, not gradients), so it explains the very model guess.sh runs; with the
mirror average (`--flip_average`) both passes count, the mirrored pass's map turned back. Old
tools' graphs are explained the same way when their global pool can be found (retrain.py's
Inception v3, TensorFlow for Poets' MobileNet).

An exported .tflite or .onnx file (`--model`) has no gradients to ask for: it is explained by
occlusion instead, a grey square slid over the photo in `OCCLUSION_STEPS` x `OCCLUSION_STEPS`
places, the map being how much the label's score drops where the square covers.

A map is scaled so that its strongest point is 1: it shows where, relative to the rest of
the photo, not how much the score would change. docs/explain.md says what it means and what
it does not.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tensorguess.classify.classifier import Classifier
from tensorguess.classify.exported import ExportedClassifier
from tensorguess.classify.model_reader import read_graph, read_model_bytes
from tensorguess.data.images import (
    UnreadableImage,
    label_image_pixels,
    load_pixels,
    load_upright,
)
from tensorguess.errors import TensorguessError
from tensorguess.files import write_bytes_atomic
from tensorguess.quiet import import_tensorflow_quietly

HIRES_CAM = "hirescam"
OCCLUSION = "occlusion"
# Occlusion: the square covers a quarter of the photo's side, in 7 x 7 overlapping places.
OCCLUSION_STEPS = 7
OCCLUSION_SIDE = 0.25
# How strongly the colours cover the photo: where the map is 0, and the more where it is 1.
OVERLAY_BASE, OVERLAY_GAIN = 0.2, 0.5
# The activations a finer block is looked for among (EfficientNet-Lite, MobileNet, Inception).
ACTIVATIONS = ("Relu6", "Relu", "Elu", "Selu")
COLOUR_MAP = "inferno"  # perceptually uniform, and readable in greyscale print
OVERLAY_SUFFIX, MAP_SUFFIX = "-heat.jpg", "-heat-map.png"
# Photos explained in one pass of the network (their gradients held at once).
EXPLAIN_BATCH = 16
# A report shows heat maps (two a photo) beside this many misclassified photos: seconds.
REPORT_HEAT_MAPS = 48


class NotExplainable(TensorguessError):
    """A model this module has no way to explain."""


@dataclass(frozen=True)
class HeatMap:
    """Where the evidence for `label` lies in one photo: `values` [height, width] in [0, 1]
    at the model's input size (the photo squashed to it, as the model saw it)."""

    label: str
    score: float
    values: np.ndarray
    method: str

    def at_size(self, height: int, width: int) -> np.ndarray:
        """The map stretched to `height` x `width` (bilinear) and scaled again so that its
        strongest point is 1 (shrinking averages the peak away)."""
        from PIL import Image

        stretched = Image.fromarray(self.values.astype(np.float32), "F").resize(
            (width, height), Image.Resampling.BILINEAR
        )
        return _unit(np.clip(np.asarray(stretched), 0.0, None))


class GradientMap:
    """HiResCAM on two blocks of a frozen graph (ours or an old tool's), multiplied, computed
    by TensorFlow."""

    method = HIRES_CAM

    def __init__(self, classifier: Classifier) -> None:
        import_tensorflow_quietly()
        import tensorflow as tf

        tf1 = tf.compat.v1
        self.classifier = classifier
        layout = classifier.layout
        graph_def = read_graph(classifier.graph_path, read_model_bytes(classifier.graph_path))
        nodes = {node.name: node for node in graph_def.node}
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf1.import_graph_def(graph_def, name="")
            output = self.graph.get_tensor_by_name(f"{layout.output_layer}:0")
            passes = _explained_blocks(nodes, self.graph, layout.output_layer)
            if not passes:
                raise NotExplainable(
                    f"{classifier.graph_path}: no global pooling found in the graph, so no "
                    "block to explain; heat maps need a convolutional network's graph"
                )
            self.label = tf1.placeholder(tf.int32, [None], name="explained_label")
            evidence = _label_evidence(nodes, self.graph, output, self.label)
            self.blocks = [block for blocks, _ in passes for block in blocks]
            self.passes = [(len(blocks), mirrored) for blocks, mirrored in passes]
            self.gradients = tf.gradients(evidence, self.blocks)
        self.input = self.graph.get_tensor_by_name(f"{layout.input_layer}:0")
        self.session = tf1.Session(graph=self.graph)
        pooled = self.blocks[0].shape
        known = layout.input_height and layout.input_width
        # A graph fed encoded bytes decodes at its own size: its maps get 32 points a cell.
        self.size = (
            (layout.input_height, layout.input_width) if known else (32 * pooled[1], 32 * pooled[2])
        )

    def maps(self, paths: Sequence[Path | BinaryIO], labels: Sequence[int]) -> np.ndarray:
        """Heat maps [B, height, width] in [0, 1] of `labels` (indices) on the photos (files,
        or open binary streams of encoded photos for graphs of ours)."""
        layout = self.classifier.layout
        if layout.takes_batches:
            pixels = np.stack([load_pixels(path, self.size) for path in paths])
            feeds = [(np.float32(pixels), list(labels))]
        elif layout.takes_bytes:
            feeds = [
                (Path(path).read_bytes(), [label])
                for path, label in zip(paths, labels, strict=True)
            ]
        else:
            feeds = [  # label_image.py's preprocessing, as the classifier feeds it
                (
                    (label_image_pixels(path, self.size)[None] - layout.input_mean)
                    / layout.input_std,
                    [label],
                )
                for path, label in zip(paths, labels, strict=True)
            ]
        maps = []
        for fed, wanted in feeds:
            values = self.session.run(
                self.blocks + self.gradients, {self.input: fed, self.label: wanted}
            )
            count = len(self.blocks)
            maps.append(self._combined(values[:count], values[count:]))
        return np.concatenate(maps)

    def _combined(self, blocks: list[np.ndarray], gradients: list[np.ndarray]) -> np.ndarray:
        """Each pass's blocks' HiResCAM maps multiplied, the passes summed (a mirrored pass's
        map turned back), scaled to [0, 1] per photo: [B, height, width]."""
        total, start = 0, 0
        for count, mirrored in self.passes:
            product = 1
            for block, gradient in zip(
                blocks[start : start + count], gradients[start : start + count], strict=True
            ):
                attribution = np.maximum((block * gradient).sum(axis=-1), 0)
                product = product * np.stack([_stretch(grid, *self.size) for grid in attribution])
            start += count
            total = total + (product[:, :, ::-1] if mirrored else product)
        return np.stack([_unit(values) for values in total])


class Occlusion:
    """Occlusion sensitivity for a model that scores uint8 pixels [B, S, S, 3] (an exported
    file): how much a label's score drops where a grey square hides the photo."""

    method = OCCLUSION

    def __init__(self, scores: Callable[[np.ndarray], np.ndarray], size: int) -> None:
        self.scores, self.size = scores, size

    def maps(self, paths: Sequence[Path | BinaryIO], labels: Sequence[int]) -> np.ndarray:
        """Heat maps [B, S, S] in [0, 1] of `labels` (indices) on the photos."""
        maps = []
        for path, label in zip(paths, labels, strict=True):
            pixels = load_pixels(path, self.size)
            side = max(1, round(self.size * OCCLUSION_SIDE))
            starts = np.linspace(0, self.size - side, OCCLUSION_STEPS).round().astype(int)
            places = [(top, left) for top in starts for left in starts]
            hidden = np.repeat(pixels[None], len(places), axis=0)
            for image, (top, left) in zip(hidden, places, strict=True):
                image[top : top + side, left : left + side] = 128
            base = self.scores(pixels[None])[0, label]
            drops = np.maximum(base - self.scores(hidden)[:, label], 0)
            total, cover = np.zeros((self.size, self.size)), np.zeros((self.size, self.size))
            for drop, (top, left) in zip(drops, places, strict=True):
                total[top : top + side, left : left + side] += drop
                cover[top : top + side, left : left + side] += 1
            maps.append(_unit(total / np.maximum(cover, 1)))
        return np.stack(maps)


Explainer = GradientMap | Occlusion


def explainer_for(classifier: Classifier | ExportedClassifier) -> Explainer:
    """The way to explain `classifier`: HiResCAM on its graph, or occlusion for an exported
    file; `NotExplainable` (one line) for a model neither can explain."""
    if isinstance(classifier, ExportedClassifier):
        model = classifier.model
        return Occlusion(model.scores, model.image_size)
    return GradientMap(classifier)


def explain(
    explainer: Explainer,
    labels: Sequence[str],
    photos: Sequence[tuple[Path, np.ndarray]],
    label: str | None = None,
) -> list[HeatMap]:
    """A heat map for each (photo, its scores): of `label`, or of each photo's best label."""
    if label is not None and label not in labels:
        raise TensorguessError(
            f"--explain_label {label!r}: not a label of this model ({', '.join(labels)})"
        )
    indices = [labels.index(label) if label is not None else int(np.argmax(s)) for _, s in photos]
    maps = explainer.maps([path for path, _ in photos], indices)
    return [
        HeatMap(labels[index], float(scores[index]), values, explainer.method)
        for (_, scores), index, values in zip(photos, indices, maps, strict=True)
    ]


@dataclass(frozen=True)
class MistakeHeat:
    """A misclassified photo's evidence, as thumbnails (JPEG): for the label the model
    guessed, and for the true one."""

    guess: bytes
    truth: bytes


def report_explainer(
    classifier: Classifier | ExportedClassifier, say: Callable[[str], None]
) -> Explainer | None:
    """The explainer of a report's heat maps, or None after saying in one line why there
    are none."""
    try:
        return explainer_for(classifier)
    except NotExplainable as error:
        say(f"No heat maps in the report: {error}")
        return None


def evidence_thumbnails(
    explainer: Explainer,
    labels: Sequence[str],
    items: Sequence[tuple[str, str, float]],
    longest: int,
) -> dict[tuple[str, str], bytes]:
    """JPEG thumbnails of where the evidence for each (photo path, label, score) lies, by
    (photo path, label); a batch holding a photo that cannot be read any more gets none (the
    others still do)."""
    found = {}
    for start in range(0, len(items), EXPLAIN_BATCH):
        batch = items[start : start + EXPLAIN_BATCH]
        try:
            maps = explainer.maps(
                [Path(path) for path, _, _ in batch], [labels.index(label) for _, label, _ in batch]
            )
        except UnreadableImage:  # a photo gone since it was scored
            continue
        for (path, label, score), values in zip(batch, maps, strict=True):
            heat = HeatMap(label, score, values, explainer.method)
            found[(path, label)] = heat_overlay_jpeg(Path(path), heat, longest)
    return found


def report_heat_maps(
    classifier: Classifier | ExportedClassifier,
    mistakes: Sequence,
    longest: int,
    say: Callable[[str], None],
) -> dict[str, MistakeHeat]:
    """The heat maps a report shows beside its first `REPORT_HEAT_MAPS` misclassified photos
    (`evaluate.Mistake`s): the evidence for the guessed and for the true label, by photo."""
    chosen = list(mistakes[:REPORT_HEAT_MAPS])
    explainer = report_explainer(classifier, say) if chosen else None
    if explainer is None:
        return {}
    items = [
        item
        for mistake in chosen
        for item in (
            (mistake.path, mistake.guess, mistake.guess_score),
            (mistake.path, mistake.truth, mistake.truth_score),
        )
    ]
    thumbnails = evidence_thumbnails(explainer, classifier.labels, items, longest)
    return {
        mistake.path: MistakeHeat(
            thumbnails[(mistake.path, mistake.guess)], thumbnails[(mistake.path, mistake.truth)]
        )
        for mistake in chosen
        if (mistake.path, mistake.guess) in thumbnails
    }


@dataclass(frozen=True)
class ExplainedUpload:
    """A photo sent as bytes (to the HTTP server), explained: the bare map at the photo's
    size (PNG) and a small overlay (JPEG), of `label`."""

    label: str
    map_png: bytes
    overlay_jpeg: bytes


def explain_upload(
    explainer: Explainer, labels: Sequence[str], data: bytes, scores: np.ndarray, longest: int
) -> ExplainedUpload:
    """The evidence for the best label of one encoded photo, whose `scores` are known."""
    index = int(np.argmax(scores))
    (values,) = explainer.maps([io.BytesIO(data)], [index])
    heat = HeatMap(labels[index], float(scores[index]), values, explainer.method)
    upright = load_upright(io.BytesIO(data))
    return ExplainedUpload(
        heat.label,
        heat_map_png(upright.shape[:2], heat),
        heat_overlay_jpeg(io.BytesIO(data), heat, longest),
    )


# The files: an overlay to look at, and the bare map -------------------------------------------


@dataclass(frozen=True)
class HeatFiles:
    """What `write_heat_files` wrote for one photo."""

    overlay: Path
    map: Path


def write_heat_files(
    folder: Path, photo: Path, heat: HeatMap, taken: set[str] | None = None
) -> HeatFiles:
    """`<stem>-heat.jpg` (the photo, the map in colour over it, the label and score written
    on it) and `<stem>-heat-map.png` (the bare map in grey at the photo's size, 0 = no
    evidence, 255 = the most) in `folder`, each written whole. `taken` holds the stems
    already used in this run: a second photo of the same name gets `-2`, `-3`, ..."""
    from PIL import Image

    from tensorguess.classify.sort import safe_name_part

    upright = load_upright(photo)
    height, width = upright.shape[:2]
    values = heat.at_size(height, width)
    stem = _free_stem(safe_name_part(Path(photo).stem), taken if taken is not None else set())
    folder.mkdir(parents=True, exist_ok=True)
    overlay = overlay_image(upright, values, f"{heat.label} {heat.score:.3f}")
    written = HeatFiles(folder / f"{stem}{OVERLAY_SUFFIX}", folder / f"{stem}{MAP_SUFFIX}")
    write_bytes_atomic(written.overlay, _encoded(overlay, "JPEG", quality=90))
    grey = Image.fromarray(np.round(values * 255).astype(np.uint8), "L")
    write_bytes_atomic(written.map, _encoded(grey, "PNG"))
    return written


def overlay_image(photo: np.ndarray, values: np.ndarray, caption: str):
    """The photo with the map's colours over it (the stronger, the more opaque) and the
    caption in a dark box at the top left: a PIL image."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw, ImageFont

    colours = colormaps[COLOUR_MAP](values)[..., :3] * 255
    opacity = (OVERLAY_BASE + OVERLAY_GAIN * values)[..., None]
    mixed = photo.astype(np.float32) * (1 - opacity) + colours * opacity
    image = Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(12, min(image.size) // 16))
    left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
    margin = max(2, (bottom - top) // 4)
    draw.rectangle([0, 0, right + 2 * margin, bottom + 2 * margin], fill=(0, 0, 0))
    draw.text((margin - left, margin), caption, fill=(255, 255, 255), font=font)
    return image


def heat_overlay_jpeg(photo: Path | BinaryIO, heat: HeatMap, longest: int) -> bytes:
    """The overlay of `photo` with its longest side at most about `longest` (a thumbnail for
    a page), JPEG bytes."""
    upright = load_upright(photo, longest)
    values = heat.at_size(*upright.shape[:2])
    image = overlay_image(upright, values, f"{heat.label} {heat.score:.2f}")
    image.thumbnail((longest, longest))
    return _encoded(image, "JPEG", quality=85)


def heat_map_png(photo_size: tuple[int, int], heat: HeatMap) -> bytes:
    """The bare map at `photo_size` (height, width) as greyscale PNG bytes."""
    from PIL import Image

    values = heat.at_size(*photo_size)
    return _encoded(Image.fromarray(np.round(values * 255).astype(np.uint8), "L"), "PNG")


def _encoded(image, kind: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


def _free_stem(stem: str, taken: set[str]) -> str:
    candidate, number = stem, 1
    while candidate in taken:
        number += 1
        candidate = f"{stem}-{number}"
    taken.add(candidate)
    return candidate


# The graph: its global pools, and the evidence for a label --------------------------------------


def _tensor_node(name: str) -> str:
    return name.lstrip("^").split(":")[0]


def _tensor(graph, name: str):
    return graph.get_tensor_by_name(name if ":" in name else f"{name}:0")


def _ancestors(nodes: dict, start: str) -> set[str]:
    """Every node `start` depends on (itself included)."""
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        todo += [_tensor_node(source) for source in nodes[name].input]
    return seen


def _explained_blocks(nodes: dict, graph, output: str) -> list[tuple[tuple, bool]]:
    """(the blocks explained, whether that pass sees the mirrored photo) for each global
    average pool the output depends on (a Mean over the two spatial axes, or an AvgPool whose
    window is the whole block): the block it pools, and the last activation before that
    block shrinks, when there is one."""
    from tensorflow.python.framework import tensor_util

    found = []
    for name in sorted(_ancestors(nodes, output)):
        node = nodes[name]
        if node.op not in ("Mean", "AvgPool"):
            continue
        pooled = _tensor(graph, node.input[0])
        shape = pooled.shape
        if shape.rank != 4:
            continue
        if node.op == "Mean":
            axes_node = nodes.get(_tensor_node(node.input[1]))
            if axes_node is None or axes_node.op != "Const":
                continue
            axes = np.ravel(tensor_util.MakeNdarray(axes_node.attr["value"].tensor))
            if sorted(int(axis) % 4 for axis in axes) != [1, 2]:
                continue
        elif list(node.attr["ksize"].list.i)[1:3] != [shape[1], shape[2]]:
            continue
        upstream = _ancestors(nodes, _tensor_node(node.input[0]))
        mirrored = any(nodes[name].op == "ReverseV2" for name in upstream)
        finer = _finer_block(nodes, graph, pooled)
        found.append(((pooled,) if finer is None else (pooled, finer), mirrored))
    return found


def _finer_block(nodes: dict, graph, pooled):
    """The nearest activation upstream of `pooled` with more positions than it has (the
    input of the network's last downsampling), or None."""
    seen, queue = set(), deque([pooled.op.name])
    while queue:
        operation = graph.get_operation_by_name(queue.popleft())
        if operation.type in ACTIVATIONS and operation.outputs:
            shape = operation.outputs[0].shape
            if shape.rank == 4 and shape[1] and pooled.shape[1] and shape[1] > pooled.shape[1]:
                return operation.outputs[0]
        for source in nodes[operation.name].input:
            name = _tensor_node(source)
            if name in nodes and name not in seen:
                seen.add(name)
                queue.append(name)
    return None


def _label_evidence(nodes: dict, graph, output, label):
    """What the maps differentiate: the label's log-odds, from the logits the output is
    made of (the input of each softmax over the labels, summed over them: of the photo and
    of its mirror image), or from the scores of an output that is neither.

    The log-odds rather than the logit: what every label's logit shares (a photo's overall
    activity) is evidence for none of them, and a sure answer's log-odds, unlike its score's
    logarithm, do not flatten out. Independent labels (sigmoid outputs, multi-label) have
    the logit itself as their log-odds."""
    import tensorflow as tf

    count = output.shape[-1]
    heads = {
        kind: [
            _tensor(graph, name).op.inputs[0]
            for name in sorted(_ancestors(nodes, output.op.name))
            if nodes[name].op == kind and _tensor(graph, name).shape[-1] == count
        ]
        for kind in ("Softmax", "Sigmoid")
    }
    if heads["Softmax"]:
        return tf.add_n([_log_odds(_rows(logits), label) for logits in heads["Softmax"]])
    if heads["Sigmoid"]:
        return tf.add_n([_per_photo(_rows(logits), label) for logits in heads["Sigmoid"]])
    return _log_odds(tf.math.log(_rows(output) + 1e-12), label)


def _log_odds(logits, label):
    """log(p / (1 - p)) of each photo's `label` under softmax(`logits`) [photos, labels]."""
    import tensorflow as tf

    others = tf.where(
        tf.one_hot(label, tf.shape(logits)[1], on_value=True, off_value=False),
        tf.fill(tf.shape(logits), float("-inf")),
        logits,
    )
    return _per_photo(logits, label) - tf.reduce_logsumexp(others, axis=1)


def _rows(values):
    """`values` as [photos, labels]."""
    import tensorflow as tf

    return tf.reshape(values, [tf.shape(values)[0], -1])


def _per_photo(values, label):
    import tensorflow as tf

    return tf.gather(values, label, axis=1, batch_dims=1)


def _unit(values: np.ndarray) -> np.ndarray:
    top = float(values.max())
    return (values / top if top > 0 else np.zeros_like(values)).astype(np.float32)


def _stretch(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """`grid` scaled to [0, 1] and stretched to `height` x `width`."""
    return HeatMap("", 0.0, _unit(grid), HIRES_CAM).at_size(height, width)

