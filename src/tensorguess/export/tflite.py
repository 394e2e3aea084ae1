"""TFLite: float32, float16 weights, and full integer (uint8 in and out), with metadata.

Every model takes one photo, [1, S, S, 3] RGB pixels 0-255 (float32, or uint8 for int8),
normalises inside, and gives [1, N] scores; its metadata (tflite_metadata.py) names the
labels, so MediaPipe Tasks' ImageClassifier loads it as it is.

The NaN an early EfficientNet-Lite0 experiment met: converting a tf.function that reads the
Keras model's weights, with the Keras 3 model as the converter's `trackable_obj` (what
TensorFlow's deprecation warning asks for), succeeds, but the converter keeps the weights
as resource variables (VAR_HANDLE, READ_VARIABLE) and never writes their values: every
read is uninitialised memory, NaN there (tests/test_export.py shows it on a small model).
We convert the frozen graph (weights already constants) with no Keras object in sight,
refuse any conversion that still reads variables, and formats.py checks every file against
TensorFlow before writing it.
"""

from __future__ import annotations

import warnings

import numpy as np

from tensorguess import __version__
from tensorguess.errors import TensorguessError, first_line
from tensorguess.export.source import TrainedModel
from tensorguess.export.tflite_metadata import ClassifierMetadata

FLOAT32, FLOAT16, INT8 = "float32", "float16", "int8"
# Operators that mean weights left in variables: a model that has them lost its weights.
VARIABLE_OPERATORS = ("VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE")


def tflite_model(
    model: TrainedModel, precision: str, calibration: np.ndarray | None = None
) -> bytes:
    """The .tflite bytes of `model`, without metadata yet.

    `calibration` (uint8 pixels [B, S, S, 3], int8 only): the photos whose activations set
    the int8 ranges. A black and a white image go first, so the input's range is exactly
    0-255 and its quantisation is the identity (scale 1, zero point 0): apps feed camera
    pixels as they are.
    """
    from tensorguess.quiet import muted_stderr, quiet_tensorflow_logger

    with quiet_tensorflow_logger(), muted_stderr(), warnings.catch_warnings():
        # The converter's notes on what it does anyway ("Statistics for quantized inputs
        # were expected": the calibration sets them; "fully_quantize: 0, ...").
        warnings.simplefilter("ignore")
        import tensorflow as tf

        function = model.pixel_function(1).get_concrete_function()
        # No variables to keep: the weights are constants (see above).
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function], tf.Module())
        if precision == FLOAT16:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif precision == INT8:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = _representative(model.image_size, calibration)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
        try:
            data = converter.convert()
        except Exception as error:  # noqa: BLE001  (the converter raises many kinds)
            raise TensorguessError(
                f"TensorFlow Lite cannot convert this model ({first_line(error)})"
            ) from None
    lost = sorted(set(VARIABLE_OPERATORS) & set(operators(data)))
    if lost:
        raise TensorguessError(
            f"the converted model reads its weights from variables ({', '.join(lost)}) and would "
            "answer NaN; it was not written"
        )
    return data


def metadata_for(model: TrainedModel, precision: str) -> ClassifierMetadata:
    """What the .tflite's metadata says: name, description, version (when it was trained),
    labels and input size, and a multi-label model's thresholds."""
    thresholds = model.task.threshold_array(len(model.labels))
    return ClassifierMetadata(
        name=f"tensorguess {model.tf_files.resolve().name} ({precision})",
        description=model.describe(),
        version=str(model.metadata.get("trained_at") or "unknown"),
        author=f"tensorguess {__version__}",
        labels=model.labels,
        image_size=model.image_size,
        thresholds=() if thresholds is None else tuple(map(float, thresholds)),
    )


def _representative(size: int, calibration: np.ndarray | None):
    if calibration is None or not len(calibration):
        raise TensorguessError("int8 needs calibration photos")
    extremes = [np.zeros((size, size, 3), np.float32), np.full((size, size, 3), 255, np.float32)]

    def samples():
        for pixels in [*extremes, *calibration]:
            yield [np.float32(pixels)[None]]

    return samples


def operators(data: bytes) -> list[str]:
    """The builtin operator names a .tflite model uses."""
    from tensorflow.lite.python import schema_py_generated as schema

    names = {value: name for name, value in vars(schema.BuiltinOperator).items() if name.isupper()}
    model = schema.Model.GetRootAsModel(data, 0)
    found = []
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        # Codes past 127 live in BuiltinCode; DeprecatedBuiltinCode keeps the old byte.
        found.append(names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM"))
    return found
