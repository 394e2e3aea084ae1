"""ONNX: uint8 NHWC pixels in (any batch), softmax scores out, labels in `metadata_props`.

Converted by tf2onnx from the frozen graph's pixel part, opset 17. The input takes RGB pixels
0-255 as uint8, like the TFLite files, and the model normalises inside, so
`metadata_props["normalization"]` is the identity; `labels` is a JSON list in output order.
A multi-label model's scores are a sigmoid per label, and it has two more properties:
`task` ("multi-label") and `thresholds` (a JSON list in output order: a label is given when
its score is at or over its threshold).
"""

from __future__ import annotations

import json

from tensorguess import __version__
from tensorguess.errors import TensorguessError, first_line
from tensorguess.export.source import TrainedModel
from tensorguess.extras import require_extra

OPSET = 17


def onnx_model(model: TrainedModel) -> bytes:
    """The .onnx bytes of `model`, with its labels and input conventions as properties."""
    require_extra("export")
    from tensorguess.quiet import quiet_tensorflow_logger

    with quiet_tensorflow_logger():
        import tf2onnx

        function = model.pixel_function(None, "uint8")
        try:
            proto, _ = tf2onnx.convert.from_function(
                function,
                input_signature=function.input_signature,
                opset=OPSET,
                output_path=None,
            )
        except Exception as error:  # noqa: BLE001  (tf2onnx raises many kinds)
            raise TensorguessError(
                f"tf2onnx cannot convert this model ({first_line(error)})"
            ) from None
    (image,) = proto.graph.input
    image.type.tensor_type.shape.dim[0].dim_param = "batch"
    proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    proto.producer_name, proto.producer_version = "tensorguess", __version__
    proto.doc_string = model.describe()
    size = model.image_size
    properties = {
        "labels": json.dumps(model.labels, ensure_ascii=False),
        "normalization": json.dumps({"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}),
        "input": f"RGB pixels 0-255, uint8 [batch, {size}, {size}, 3], the photo squashed to "
        f"{size}x{size}; the model normalises inside",
        "output": "softmax scores [batch, labels], in the order of `labels`",
    }
    thresholds = model.task.threshold_array(len(model.labels))
    if thresholds is not None:
        properties.update(
            output="sigmoid scores [batch, labels], each label's own probability, in the order "
            "of `labels`; a label is given when its score is at or over its threshold",
            task=model.task.name,
            thresholds=json.dumps([float(value) for value in thresholds]),
        )
    del proto.metadata_props[:]
    for key, value in properties.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()
