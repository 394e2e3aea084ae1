"""TFLite model metadata, as MediaPipe Tasks and the LiteRT support library read it.

A `.tflite` file is a flatbuffer (`tflite.Model`) followed by a zip archive. Metadata is a
second flatbuffer (`tflite.ModelMetadata`, identifier `M001`, schema
`metadata_schema.fbs`) stored in one of the model's buffers and named `TFLITE_METADATA`
in its `metadata` list; files the metadata names (our labels) live in the zip archive.

The writers shipped for this (MediaPipe's `metadata_writers`, `tflite-support`) either fail
to import in current wheels or pin a protobuf that TensorFlow 2.21 cannot live with, and
the metadata we need is nine small tables. So we build it here with the `flatbuffers`
package (a TensorFlow dependency), slot numbers from `metadata_schema.fbs`, and edit the
model with TensorFlow's own generated `schema_py_generated` classes. tests/test_export.py
reads the result back with MediaPipe's generated classes and loads it in MediaPipe's
ImageClassifier, so a slot written wrong would fail there.

A multi-label model's scores are sigmoids, one per label, each with its own threshold.
MediaPipe's ImageClassifier applies no activation of its own: it reads the output as the
scores, optionally passes each through the sigmoid its metadata's `ScoreCalibrationOptions`
describe (one line "scale,slope,offset" per label in an associated file of type
TENSOR_AXIS_SCORE_CALIBRATION), then drops the results under one global threshold
(`ScoreThresholdingOptions`, which an app's own `score_threshold` overrides). So each
label's score is calibrated with INVERSE_LOGISTIC, scale 1, slope 1 and offset
-logit(threshold): its calibrated score is sigmoid(logit(score) - logit(threshold)), 0.5
exactly at the label's threshold, and the global threshold is 0.5: MediaPipe then returns
just the labels guess.sh gives, with scores that say how far over their thresholds they are.
"""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass, field

import flatbuffers
import numpy as np

from tensorguess.classify.exported import PACKED_CALIBRATION_FILE, PACKED_LABELS_FILE

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
MODEL_IDENTIFIER = b"TFL3"
# Everything we write was in the schema's first version (metadata_version.cc lists what came
# later: tokenizers, tensor groups, audio, associated file versions, custom metadata).
MIN_PARSER_VERSION = "1.0.0"

# Enum and union values of metadata_schema.fbs.
_COLOR_SPACE_RGB = 1
_CONTENT_FEATURE_PROPERTIES = 1
_CONTENT_IMAGE_PROPERTIES = 2
_PROCESS_UNIT_NORMALIZATION = 1
_PROCESS_UNIT_SCORE_CALIBRATION = 2
_PROCESS_UNIT_SCORE_THRESHOLDING = 3
_FILE_TENSOR_AXIS_LABELS = 2
_FILE_TENSOR_AXIS_SCORE_CALIBRATION = 4
_SCORE_TRANSFORMATION_INVERSE_LOGISTIC = 2
# A multi-label label's threshold, once calibrated (see above).
CALIBRATED_THRESHOLD = 0.5
# Thresholds are kept this far from 0 and 1, whose log-odds are infinite.
_THRESHOLD_MARGIN = 1e-6


@dataclass(frozen=True)
class Byte:
    """A one-byte scalar field (an enum, or a union's type)."""

    value: int


@dataclass(frozen=True)
class UInt:
    """A uint32 scalar field."""

    value: int


@dataclass(frozen=True)
class Float:
    """A float32 scalar field."""

    value: float


@dataclass(frozen=True)
class Floats:
    """A [float] field."""

    values: tuple[float, ...]


@dataclass
class Table:
    """A flatbuffer table: field slot -> value (str, Byte, UInt, Floats, Table or [Table])."""

    fields: dict[int, object] = field(default_factory=dict)


def _build(builder: flatbuffers.Builder, table: Table) -> int:
    """Write `table` and everything it refers to; its offset. Children come first, as
    flatbuffers requires: nothing may be created while a table is open."""
    references = {}
    for slot, value in table.fields.items():
        if isinstance(value, str):
            references[slot] = builder.CreateString(value)
        elif isinstance(value, Table):
            references[slot] = _build(builder, value)
        elif isinstance(value, Floats):
            builder.StartVector(4, len(value.values), 4)
            for number in reversed(value.values):
                builder.PrependFloat32(number)
            references[slot] = builder.EndVector()
        elif isinstance(value, list):
            offsets = [_build(builder, item) for item in value]
            builder.StartVector(4, len(offsets), 4)
            for offset in reversed(offsets):
                builder.PrependUOffsetTRelative(offset)
            references[slot] = builder.EndVector()
    builder.StartObject(max(table.fields, default=-1) + 1)
    for slot, value in table.fields.items():
        if isinstance(value, Byte):
            builder.PrependUint8Slot(slot, value.value, 0)
        elif isinstance(value, UInt):
            builder.PrependUint32Slot(slot, value.value, 0)
        elif isinstance(value, Float):
            builder.PrependFloat32Slot(slot, value.value, 0.0)
        else:
            builder.PrependUOffsetTRelativeSlot(slot, references[slot], 0)
    return builder.EndObject()


@dataclass(frozen=True)
class ClassifierMetadata:
    """What an image classifier's metadata says."""

    name: str
    description: str
    version: str
    author: str
    labels: list[str]
    image_size: int
    # NormalizationOptions: the app feeds (pixel - mean) / std. Ours normalise inside the
    # model, so the identity (0, 1): the input is RGB pixels from 0 to 255.
    mean: float = 0.0
    std: float = 1.0
    # A multi-label model's thresholds, in the order of the labels; () for single-label.
    thresholds: tuple[float, ...] = ()

    def calibration(self) -> str:
        """The score calibration file of a multi-label model: "scale,slope,offset" a label.

        No newline after the last: MediaPipe reads an empty last line as one more label's."""
        lines = []
        for threshold in self.thresholds:
            kept = min(max(threshold, _THRESHOLD_MARGIN), 1 - _THRESHOLD_MARGIN)
            lines.append(f"1.0,1.0,{-math.log(kept / (1 - kept))!r}")
        return "\n".join(lines)


def metadata_buffer(info: ClassifierMetadata) -> bytes:
    """The ModelMetadata flatbuffer of an image classifier (one input image, one [1, N] output)."""
    image = Table(
        {
            0: "image",
            1: f"RGB photo, squashed to {info.image_size}x{info.image_size} pixels, values 0-255",
            # content: ImageProperties (RGB, default size)
            3: Table(
                {
                    0: Byte(_CONTENT_IMAGE_PROPERTIES),
                    1: Table(
                        {
                            0: Byte(_COLOR_SPACE_RGB),
                            1: Table({0: UInt(info.image_size), 1: UInt(info.image_size)}),
                        }
                    ),
                }
            ),
            # process_units: NormalizationOptions
            4: [
                Table(
                    {
                        0: Byte(_PROCESS_UNIT_NORMALIZATION),
                        1: Table({0: Floats((info.mean,)), 1: Floats((info.std,))}),
                    }
                )
            ],
            # stats: max, min of the input values
            5: Table({0: Floats((255.0,)), 1: Floats((0.0,))}),
        }
    )
    labels_file = Table(
        {
            0: PACKED_LABELS_FILE,
            1: "One label per line, in the order of the scores.",
            2: Byte(_FILE_TENSOR_AXIS_LABELS),
        }
    )
    scores = Table(
        {
            0: "probability",
            1: "The probability of each label, in the order of the labels file.",
            3: Table({0: Byte(_CONTENT_FEATURE_PROPERTIES), 1: Table({})}),
            5: Table({0: Floats((1.0,)), 1: Floats((0.0,))}),
            6: [labels_file],
        }
    )
    if info.thresholds:
        scores.fields[1] = (
            "Each label's own probability (a sigmoid: any number of labels may score high), in "
            "the order of the labels file; calibrated so that each label's threshold is 0.5."
        )
        scores.fields[4] = [
            Table(
                {
                    0: Byte(_PROCESS_UNIT_SCORE_CALIBRATION),
                    1: Table({0: Byte(_SCORE_TRANSFORMATION_INVERSE_LOGISTIC)}),
                }
            ),
            Table(
                {
                    0: Byte(_PROCESS_UNIT_SCORE_THRESHOLDING),
                    1: Table({0: Float(CALIBRATED_THRESHOLD)}),
                }
            ),
        ]
        scores.fields[6] = [
            labels_file,
            Table(
                {
                    0: PACKED_CALIBRATION_FILE,
                    1: "Each label's score calibration (scale,slope,offset), offset being "
                    "minus the log-odds of its threshold.",
                    2: Byte(_FILE_TENSOR_AXIS_SCORE_CALIBRATION),
                }
            ),
        ]
    model = Table(
        {
            0: info.name,
            1: info.description,
            2: info.version,
            3: [Table({2: [image], 3: [scores]})],
            4: info.author,
            7: MIN_PARSER_VERSION,
        }
    )
    builder = flatbuffers.Builder(1024)
    builder.Finish(_build(builder, model), METADATA_IDENTIFIER)
    return bytes(builder.Output())


def with_metadata(model: bytes, info: ClassifierMetadata) -> bytes:
    """The .tflite `model` with `info` as its metadata and the labels file packed after it."""
    from tensorflow.lite.python import schema_py_generated as schema

    tree = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata_buffer(info), np.uint8)
    tree.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(tree.buffers) - 1
    tree.metadata = [item for item in tree.metadata or [] if item.name != METADATA_NAME.encode()]
    tree.metadata.append(entry)
    builder = flatbuffers.Builder(len(model) + 4096)
    builder.Finish(tree.Pack(builder), MODEL_IDENTIFIER)
    archive = io.BytesIO()
    archive.write(bytes(builder.Output()))
    # Appended as a zip: offsets in its directory count from the start of the file, which is
    # what zipfile writes when it appends to a stream that already holds the model.
    with zipfile.ZipFile(archive, "a", zipfile.ZIP_STORED) as packed:
        packed.writestr(PACKED_LABELS_FILE, "".join(f"{label}\n" for label in info.labels))
        if info.thresholds:
            packed.writestr(PACKED_CALIBRATION_FILE, info.calibration())
    return archive.getvalue()
