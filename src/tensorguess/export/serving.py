"""The TensorFlow Serving layout: `serving/<n>/`, a SavedModel that takes encoded photos.

TF Serving watches a model's base path (here `serving/`) and serves the highest numbered
version folder; a new export adds the next number, so a running server picks it up.

Signatures:
- `serving_default` (predict): `images`, a batch of encoded photos (string [B]; `{"b64":
  ...}` in TF Serving's JSON) -> `scores` float [B, N] and `classes` string [B, N], the
  labels in the order of the scores.
- `classify` (method `tensorflow/serving/classify`): serialized tf.Example protos with the
  encoded photo in the feature `image` -> `classes` and `scores`, as TF Serving's `:classify`
  REST call and gRPC Classify expect.

A multi-label model's `scores` are a sigmoid per label, and `serving_default` also answers
`over_threshold` (bool [B, N]): the labels the model gives each photo, those at or over their
thresholds, as guess.sh marks them.

Decoding happens inside, in TensorFlow ops that make the pixels `images.load_pixels`
makes (Pillow's, which guess.sh and training use), so a served photo gets guess.sh's scores:
a JPEG is decoded at the DCT scale Pillow's `draft` picks, with libjpeg's accurate IDCT,
then shrunk by a whole factor (`reduce`) and squashed with Pillow's box or bilinear filter,
rounded to 8 bits after each pass as Pillow does. What it does not do: turn a photo by its
EXIF orientation (send photos upright) or flatten transparency onto white (it is dropped).
"""

from __future__ import annotations

from pathlib import Path

from tensorguess.export.source import TrainedModel
from tensorguess.model_files import INPUT_PIXELS, OUTPUT

SERVING_DIR = "serving"
EXAMPLE_FEATURE = "image"


def next_version(base: Path) -> int:
    """The version number after every numbered folder in `base` (1 for the first)."""
    numbers = [int(entry.name) for entry in base.glob("*") if entry.name.isdigit()]
    return max(numbers, default=0) + 1


def write_serving_model(folder: Path, model: TrainedModel) -> None:
    """Write the SavedModel into `folder` (which must not exist yet)."""
    from tensorguess.quiet import quiet_tensorflow_logger

    with quiet_tensorflow_logger():  # TF1's signature helpers warn that they are TF1's
        _build(folder, model)


def served_scores(folder: Path):
    """`scores(pixels)` through the SavedModel's `serving_default`, as TF Serving calls it.

    The pixels [B, S, S, 3] go in as PNG files, which decode to exactly those pixels, at
    the model's size, so the squash leaves them as they are: the scores must be TensorFlow's.
    """
    import io

    import tensorflow as tf
    from PIL import Image

    served = tf.saved_model.load(str(folder)).signatures["serving_default"]

    def scores(pixels):
        encoded = []
        for image in pixels:
            stream = io.BytesIO()
            Image.fromarray(image).save(stream, format="PNG")
            encoded.append(stream.getvalue())
        return served(images=tf.constant(encoded))["scores"].numpy()

    return scores


def _build(folder: Path, model: TrainedModel) -> None:
    import tensorflow as tf

    from tensorguess.features.engines.tensorflow import save_graph_signatures

    tf1 = tf.compat.v1
    size = model.image_size
    with tf.Graph().as_default():
        examples = tf1.placeholder(tf.string, [None], name="examples")
        parsed = tf.io.parse_example(
            examples, {EXAMPLE_FEATURE: tf.io.FixedLenFeature([], tf.string)}
        )[EXAMPLE_FEATURE]
        # Fed directly by `serving_default`, and by the examples' photos under `classify`.
        images = tf1.placeholder_with_default(parsed, [None], name="images")
        pixels = tf.map_fn(
            lambda contents: decode_like_training(contents, size),
            images,
            fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
        )
        (scores,) = tf.graph_util.import_graph_def(
            model.graph_def,
            input_map={f"{INPUT_PIXELS}:0": pixels},
            return_elements=[f"{OUTPUT}:0"],
            name="classifier",
        )
        scores = tf.identity(scores, name="scores")
        classes = tf.tile(tf.constant([model.labels]), [tf.shape(scores)[0], 1], name="classes")
        outputs = {"scores": scores, "classes": classes}
        thresholds = model.task.threshold_array(len(model.labels))
        if thresholds is not None:
            outputs["over_threshold"] = tf.greater_equal(
                scores, tf.constant(thresholds, tf.float32), name="over_threshold"
            )
        save_graph_signatures(
            folder,
            {
                "serving_default": tf1.saved_model.predict_signature_def(
                    {"images": images}, outputs
                ),
                "classify": tf1.saved_model.classification_signature_def(examples, classes, scores),
            },
        )


def decode_like_training(contents, size: int):
    """Encoded photo (scalar string) -> float32 [S, S, 3], the pixels `load_pixels` gives."""
    import tensorflow as tf

    def jpeg():
        # Pillow's draft: the largest of 1/8, 1/4, 1/2 that keeps both sides >= size.
        smallest = tf.reduce_min(tf.io.extract_jpeg_shape(contents)[:2]) // size

        def scaled(ratio: int):
            return lambda: tf.io.decode_jpeg(
                contents, channels=3, ratio=ratio, dct_method="INTEGER_ACCURATE"
            )

        return tf.case([(smallest >= ratio, scaled(ratio)) for ratio in (8, 4, 2)], scaled(1))

    def other():
        return tf.io.decode_image(contents, channels=3, expand_animations=False)

    image = tf.ensure_shape(tf.cond(tf.io.is_jpeg(contents), jpeg, other), [None, None, 3])
    factor = tf.reduce_min(tf.shape(image)[:2]) // size
    image = tf.cond(factor >= 2, lambda: _reduce(image, factor), lambda: tf.cast(image, tf.float64))
    shrinking = tf.reduce_min(tf.shape(image)[:2]) >= size
    image = tf.cond(
        shrinking, lambda: _resize(image, size, box=True), lambda: _resize(image, size, box=False)
    )
    return tf.cast(image, tf.float32)


def _opaque(value: float):
    """A float64 constant that TensorFlow's graph optimiser cannot fold.

    Folding regroups arithmetic ((o + 0.5) * (n / 224) -> ((o + 0.5) / 224) * n): the same
    in exact arithmetic, not in doubles, and a box filter's edges are decided by the last
    bit of such a sum. Pillow's sums must be computed in Pillow's order.
    """
    import tensorflow as tf

    return tf.compat.v1.placeholder_with_default(tf.constant(value, tf.float64), [])


def _to_8_bits(pixels):
    import tensorflow as tf

    return tf.clip_by_value(tf.floor(pixels + _opaque(0.5)), 0.0, 255.0)


def _filter_weights(size_in, size_out: int, box: bool):
    """[size_out, size_in]: Pillow's resampling weights (Resample.c, precompute_coeffs)."""
    import tensorflow as tf

    size_in = tf.cast(size_in, tf.float64)
    half, one = _opaque(0.5), _opaque(1.0)
    scale = size_in / _opaque(float(size_out))
    filter_scale = tf.maximum(scale, one)
    support = (half if box else one) * filter_scale
    center = (tf.range(_opaque(float(size_out)))[:, None] + half) * scale
    first = tf.maximum(tf.floor(center - support + half), 0.0)
    last = tf.minimum(tf.floor(center + support + half), size_in)
    source = tf.range(size_in)[None, :]
    x = ((source - center) + half) * (one / filter_scale)
    if box:
        weights = tf.cast((x > -half) & (x <= half), tf.float64)
    else:
        weights = tf.maximum(one - tf.abs(x), 0.0)
    weights *= tf.cast((source >= first) & (source < last), tf.float64)
    return weights / tf.reduce_sum(weights, axis=1, keepdims=True)


def _resize(image, size: int, box: bool):
    """Pillow's two-pass resize: across, rounded to 8 bits, then down."""
    import tensorflow as tf

    height, width = tf.shape(image)[0], tf.shape(image)[1]
    across = _to_8_bits(tf.einsum("ow,hwc->hoc", _filter_weights(width, size, box), image))
    return _to_8_bits(tf.einsum("oh,hwc->owc", _filter_weights(height, size, box), across))


def _reduce(image, factor):
    """Pillow's `reduce(factor)`: the mean of each factor x factor block, the blocks on the
    right and bottom edges holding what pixels are left."""
    import tensorflow as tf

    height, width = tf.shape(image)[0], tf.shape(image)[1]
    rows, columns = -(-height // factor), -(-width // factor)
    padding = [[0, rows * factor - height], [0, columns * factor - width], [0, 0]]

    def block_sums(values):
        padded = tf.pad(values, padding)
        return tf.reduce_sum(tf.reshape(padded, [rows, factor, columns, factor, -1]), [1, 3])

    totals = block_sums(tf.cast(image, tf.float64))
    counts = block_sums(tf.ones([height, width, 1], tf.float64))
    return _to_8_bits(totals / counts)
