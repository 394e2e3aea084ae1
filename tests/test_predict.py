"""Models old and new: the 2016 label_image.py logic on our graph, and old tools' graphs."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import draw_photos, tensorguess
from tensorguess.images import load_pixels
from tensorguess.predict import Classifier, load_classifier


def label_image_2016(graph_path, labels_path, image_path):
    """label_image.py (2016) as it was, under tf.compat.v1: feed bytes, read final_result."""
    tf1 = tf.compat.v1
    labels = [line.rstrip() for line in tf1.gfile.GFile(str(labels_path))]
    with tf.Graph().as_default():
        graph_def = tf1.GraphDef()
        with tf1.gfile.FastGFile(str(graph_path), "rb") as stream:
            graph_def.ParseFromString(stream.read())
        tf.import_graph_def(graph_def, name="")
        image_data = tf1.gfile.FastGFile(str(image_path), "rb").read()
        with tf1.Session() as session:
            softmax = session.graph.get_tensor_by_name("final_result:0")
            predictions = session.run(softmax, {"DecodeJpeg/contents:0": image_data})
    return labels, predictions


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
    result = tensorguess(
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
    result = tensorguess("guess", tf_files, photo, "--input_layer", "DecodeJpeg/contents")
    assert result.stdout.splitlines()[0].startswith("circle (score = ")
