"""The old ways, done again for the benchmark on the same photos, split and backbone as ours.

- `legacy_sort`: the 2016 label_dir.py loop, one session call per image fed its bytes, then
  a copy;
- `keras_end_to_end`: make_image_classifier's way, a frozen backbone and a softmax fitted on
  decoded images every epoch (only the caching differs from ours).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def legacy_sort(graph: str, labels: str, source: str, destination: str) -> None:
    """The 2016 label_dir.py way: one session call per image feeding its bytes, then a copy."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    names = [line.rstrip() for line in open(labels, encoding="utf-8")]
    graph_def = tf1.GraphDef()
    with open(graph, "rb") as stream:
        graph_def.ParseFromString(stream.read())
    os.makedirs(destination, exist_ok=True)
    with tf.Graph().as_default():
        tf.import_graph_def(graph_def, name="")
        with tf1.Session() as session:
            softmax = session.graph.get_tensor_by_name("final_result:0")
            for number, name in enumerate(sorted(os.listdir(source))):
                path = os.path.join(source, name)
                with open(path, "rb") as stream:
                    scores = session.run(softmax, {"DecodeJpeg/contents:0": stream.read()})[0]
                best = int(scores.argmax())
                target = f"{number}-{names[best]}-{scores[best]:.5f}{os.path.splitext(name)[1]}"
                shutil.copy(path, os.path.join(destination, target))


def keras_end_to_end(tf_files: str, backbone_name: str, epochs: int) -> None:
    """make_image_classifier's way: fit a frozen backbone + softmax on images, every epoch.

    The same photos, split, decoder and backbone as ours; only the caching differs.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from tensorguess.data.dataset import TEST, TRAIN, VALIDATION, scan_data
    from tensorguess.data.images import pixel_batches
    from tensorguess.features.backbones import get_backbone

    scan = scan_data(Path(tf_files) / "data")
    backbone = get_backbone(backbone_name)
    backbone.model.trainable = False
    index = {label: i for i, label in enumerate(scan.labels)}
    size = backbone.image_size

    def dataset(split: str, shuffle: bool):
        images = list(scan.split(split))

        def batches():
            order = np.random.permutation(len(images)) if shuffle else range(len(images))
            chosen = [images[i] for i in order]
            labels = np.array([index[image.label] for image in chosen])
            start = 0
            for pixels, _ in pixel_batches([image.path for image in chosen], size, 32):
                yield np.float32(pixels), labels[start : start + len(pixels)]
                start += len(pixels)

        return tf.data.Dataset.from_generator(
            batches,
            output_signature=(
                tf.TensorSpec([None, size, size, 3], tf.float32),
                tf.TensorSpec([None], tf.int64),
            ),
        )

    class Preprocess(keras.layers.Layer):
        def call(self, pixels):
            return backbone.preprocess(pixels)

    pixels = keras.Input((size, size, 3))
    features = backbone.model(Preprocess()(pixels), training=False)
    outputs = keras.layers.Dense(len(scan.labels), activation="softmax")(features)
    model = keras.Model(pixels, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(
        dataset(TRAIN, True),
        validation_data=dataset(VALIDATION, False),
        epochs=epochs,
        verbose=0,
    )
    _, accuracy = model.evaluate(dataset(TEST, False), verbose=0)
    print(f"Final test accuracy = {100 * accuracy:.1f}% (N={len(scan.split(TEST))})")
