"""`tensorguess export`: the trained classifier as TFLite, ONNX and TF Serving files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tensorguess.cli.common import (
    add_debug_flag,
    add_tf_files,
    command_parser,
    output,
    positive_int,
)

NAME = "export"
FORMAT_NAMES = "tflite, tflite-fp16, tflite-int8, onnx, serving, or all"
EPILOG = """examples:
  {prog} ./tf_files                        # every format, into ./tf_files/export/
  {prog} ./tf_files --format tflite,tflite-int8 --output ~/app/models
  Wrote tf_files/export/model.tflite (13.5 MB)
  Wrote tf_files/export/model_int8.tflite (4.0 MB; test accuracy 98.5%, float32 99.0%, N=195)

formats and the names they are written under (an older file of the same name is replaced):
  tflite       model.tflite       float32, MediaPipe/LiteRT metadata with the labels
  tflite-fp16  model_fp16.tflite  float16 weights, half the size
  tflite-int8  model_int8.tflite  full integer, uint8 in and out, calibrated on the
                                  training photos in TF_FILES/data
  onnx         model.onnx         opset 17, uint8 NHWC in, labels in metadata_props
  serving      serving/<n>/       a SavedModel for TensorFlow Serving (next free version)
Each file is checked against TensorFlow before it is written, and written whole or not at
all. tflite and onnx need the export extra, installed on first use. How to load each file
on Android, iOS, the web and in Python: docs/export.md."""


def add_parser(commands) -> argparse.ArgumentParser:
    """The export command and its flags."""
    export = command_parser(
        commands,
        NAME,
        help="export the classifier for phones, browsers, ONNX Runtime and TF Serving",
        description="Write the classifier in TF_FILES as TFLite (with MediaPipe metadata), "
        "ONNX and TensorFlow Serving files.",
        epilog=EPILOG,
    )
    add_tf_files(export)
    add_format_flag(export, "F[,F...]", "the formats to write (default all): " + FORMAT_NAMES)
    export.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="the folder to write into (created if missing; default TF_FILES/export)",
    )
    export.add_argument(
        "--calibration_photos",
        type=positive_int,
        metavar="N",
        help="how many training photos calibrate tflite-int8, as many of each label as there "
        "are (default 300)",
    )
    export.add_argument("--json", action="store_true", help="print JSON instead of lines")
    add_debug_flag(export)
    export.set_defaults(run=run, interrupted="files already written are whole; rerun to finish")
    return export


def formats(text: str) -> list[str]:
    """An argparse type: `tflite,onnx` -> ["tflite", "onnx"]."""
    from tensorguess.export.formats import parse_formats

    try:
        return parse_formats(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


formats.__name__ = "format"


def add_format_flag(command: argparse.ArgumentParser, metavar: str, text: str, flag="--format"):
    """The list of formats (export's --format, train's --export)."""
    command.add_argument(flag, type=formats, metavar=metavar, help=text)


def run(args: argparse.Namespace) -> int:
    """Export, one line per file written (JSON with --json)."""
    from tensorguess.export.formats import FORMATS, export_formats

    say = output(args.json)
    written = export_formats(
        args.tf_files, args.format or list(FORMATS), args.output, say, args.calibration_photos
    )
    if args.json:
        print(json.dumps([exported.to_json() for exported in written], indent=2))
    return 0
