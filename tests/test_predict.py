"""Models old and new: the 2016 label_image.py logic on our graph, and old tools' graphs."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from helpers import ROOT, draw_photos, in_process, label_image_2016, label_image_2017
from tensorguess.classify.classifier import Classifier
from tensorguess.classify.loading import load_classifier
from tensorguess.data.images import load_pixels
from tensorguess.features.engines import engine_precision, resolved_engine


def test_2016_label_image_runs_on_the_exported_graph(trained, tmp_path):
    tf_files, _ = trained
    (photo,) = draw_photos(tmp_path, "square", 1, seed=21)
    labels, predictions = label_image_2016(
        tf_files / "retrained_graph.pb", tf_files / "retrained_labels.txt", photo
    )
    assert predictions.shape == (1, 2)
    assert labels[int(np.argmax(predictions[0]))] == "square"
    # Our own batch path (Pillow decoding) agrees with the in-graph decoding.
    ours = next(load_classifier(tf_files).classify([photo]))
    np.testing.assert_allclose(ours.scores, predictions[0], atol=0.05)


def test_saved_model_serves_encoded_images(trained, tmp_path):
    tf_files, _ = trained
    photos = draw_photos(tmp_path, "circle", 2, seed=22)
    served = tf.saved_model.load(str(tf_files / "saved_model")).signatures["serving_default"]
    answer = served(images=tf.constant([photo.read_bytes() for photo in photos]))
    assert answer["scores"].shape == (2, 2)
    assert [label.decode() for label in answer["label"].numpy()] == ["circle", "circle"]
    # The pixels signature scores decoded photos like the frozen graph's pixel input does.
    model = tf.saved_model.load(str(tf_files / "saved_model"))
    pixels = np.stack([load_pixels(photo, 224) for photo in photos]).astype(np.float32)
    by_pixels = model.signatures["classify_pixels"](pixels=tf.constant(pixels))["scores"]
    reference = load_classifier(tf_files, engine="tensorflow")
    expected = [prediction.scores for prediction in reference.classify(photos)]
    np.testing.assert_allclose(by_pixels.numpy(), np.stack(expected), atol=1e-5)


def _old_tool_graph(path, input_name, size, dtype=tf.float32, batch=1):
    """A tiny graph laid out like an old tool's: input `input_name`, output final_result.

    It scores two classes from the mean of the red and blue channels of its input, so
    the test knows the right answer and the normalisation that was applied.
    """
    tf1 = tf.compat.v1
    with tf.Graph().as_default() as graph:
        images = tf1.placeholder(dtype, [batch, size, size, 3], name=input_name)
        means = tf.reduce_mean(images, axis=[1, 2])
        logits = tf.stack([means[:, 0], means[:, 2]], axis=1) * 10.0
        tf.nn.softmax(logits, name="final_result")
    path.write_bytes(graph.as_graph_def().SerializeToString())
    path.with_name("retrained_labels.txt").write_text("red\nblue\n")
    return path


@pytest.mark.parametrize(
    ("input_name", "size", "mean", "std"),
    [("Mul", 299, 128, 128), ("input", 224, 128, 128), ("Placeholder", 96, 0, 255)],
)
def test_old_tool_layouts_are_detected(tmp_path, input_name, size, mean, std):
    graph = _old_tool_graph(tmp_path / "retrained_graph.pb", input_name, size)
    red = tmp_path / "red.png"
    Image.new("RGB", (50, 40), (250, 10, 10)).save(red)
    classifier = Classifier(graph, graph.with_name("retrained_labels.txt"))
    layout = classifier.layout
    assert (layout.input_layer, layout.input_height, layout.input_mean, layout.input_std) == (
        input_name,
        size,
        mean,
        std,
    )
    scores = next(classifier.classify([red])).scores
    normalised = (np.array([250, 10]) - mean) / std
    expected = np.exp(normalised * 10) / np.exp(normalised * 10).sum()
    np.testing.assert_allclose(scores, expected, rtol=1e-3)


def test_label_image_flags_override_detection(tmp_path):
    _old_tool_graph(tmp_path / "retrained_graph.pb", "pixels_in", 64, batch=None)
    blue = tmp_path / "blue.jpg"
    Image.new("RGB", (64, 64), (0, 0, 250)).save(blue)
    result = in_process(
        "guess",
        tmp_path,
        blue,
        "--input_layer",
        "pixels_in",
        "--input_height",
        "64",
        "--input_width",
        "64",
        "--input_mean",
        "0",
        "--input_std",
        "255",
    )
    assert result.stdout.splitlines()[0].startswith("blue (score = 0.99")


def test_our_graph_through_its_2016_bytes_input(trained, tmp_path):
    tf_files, _ = trained
    (photo,) = draw_photos(tmp_path, "circle", 1, seed=23)
    result = in_process("guess", tf_files, photo, "--input_layer", "DecodeJpeg/contents")
    assert result.stdout.splitlines()[0].startswith("circle (score = ")


def _mobilenet_style_graph(folder):
    """A graph laid out like TensorFlow for Poets 2's MobileNet: float input `input` [1, 224,
    224, 3] normalised (x - 128) / 128, softmax `final_result` over two labels.

    Inside: EfficientNet-Lite0's features (a real network, so the scores depend on the
    pixels as a real model's do) and a fixed random head that keeps scores away from 0 and 1.
    """
    from tensorguess.features.backbones import get_backbone
    from tensorguess.features.engines import freeze_pixels_function

    backbone = get_backbone("efficientnet_lite0")
    kernel = tf.constant(np.random.default_rng(7).normal(0, 0.06, size=(1280, 2)), tf.float32)

    def classify(pixels):
        return tf.nn.softmax(tf.matmul(backbone.features(pixels), kernel))

    core, core_input, core_output = freeze_pixels_function(classify, 224)
    tf1 = tf.compat.v1
    with tf.Graph().as_default() as graph:
        normalised = tf1.placeholder(tf.float32, [1, 224, 224, 3], name="input")
        (scores,) = tf.graph_util.import_graph_def(
            core,
            input_map={f"{core_input}:0": normalised * 128.0 + 128.0},
            return_elements=[f"{core_output}:0"],
            name="mobilenet",
        )
        tf.identity(scores, name="final_result")
    folder.mkdir(parents=True, exist_ok=True)
    graph_path = folder / "retrained_graph.pb"
    graph_path.write_bytes(graph.as_graph_def().SerializeToString())
    (folder / "retrained_labels.txt").write_text("first\nsecond\n")
    return graph_path


def test_an_old_mobilenet_graph_answers_as_the_2017_label_image_did(tmp_path):
    # The sample's own test photos (phone JPEGs, some turned by EXIF): no ../shared needed.
    photos = sorted((ROOT / "test_data").glob("*.JPG"))
    graph = _mobilenet_style_graph(tmp_path / "tf_files")
    expected = label_image_2017(graph, photos, "input", 224, 128, 128)
    # Scores a preprocessing can move: mostly away from 0 and 1.
    assert ((expected > 0.02) & (expected < 0.98)).mean() > 0.9

    result = in_process("guess", tmp_path / "tf_files", *photos, "--json")  # no flags
    answers = json.loads(result.stdout)
    got = np.array(
        [[p["score"] for p in sorted(a["predictions"], key=lambda p: p["label"])] for a in answers]
    )
    np.testing.assert_allclose(got, expected, atol=1e-5)  # README: within 1e-5
    # An old graph runs in float32 under auto, whatever the CPU prefers (OpenVINO's own
    # precision is bfloat16 on CPUs with AMX, float32 on others).
    engine = Classifier(graph, graph.with_name("retrained_labels.txt")).engine
    assert engine_precision(engine) == "f32"

    # What the test guards against: our own decoder (EXIF, box filter) moves these scores.
    ours = np.stack([load_pixels(photo, 224) for photo in photos]).astype(np.float32)
    runner = Classifier(graph, graph.with_name("retrained_labels.txt"), engine="tensorflow")
    moved = np.concatenate([runner._scores((pixels[None] - 128) / 128) for pixels in ours])
    assert np.abs(moved - expected).max() > 0.01


def test_our_model_names_its_precision_and_an_altered_graph_falls_back_to_float32(trained_copy):
    metadata = json.loads((trained_copy / "tensorguess.json").read_text())
    graph = trained_copy / "retrained_graph.pb"
    assert metadata["precision"] == engine_precision(resolved_engine("auto"))
    assert metadata["graph_sha256"] == hashlib.sha256(graph.read_bytes()).hexdigest()
    assert load_classifier(trained_copy).precision == metadata["precision"]
    # Another graph put in its place is not the one the metadata describes: float32.
    graph_def = tf.compat.v1.GraphDef.FromString(graph.read_bytes())
    extra = graph_def.node.add()
    extra.CopyFrom(graph_def.node[0])
    extra.name = "an_unused_copy"
    graph.write_bytes(graph_def.SerializeToString())
    classifier = load_classifier(trained_copy)
    assert classifier.precision == "f32" and engine_precision(classifier.engine) == "f32"
