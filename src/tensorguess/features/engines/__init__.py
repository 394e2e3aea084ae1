"""Engines: what runs a frozen graph from decoded pixels to an output, and how it is chosen.

Two engines run the same frozen GraphDef. TensorFlow (`engines.tensorflow`) is the
reference and the GPU engine. OpenVINO (`engines.openvino`) is the fast one on CPUs, in
the precision it picks by itself (bfloat16 on CPUs with AMX or AVX-512 BF16) or in
float32. Tests check that their features and scores agree within stated tolerances;
docs/benchmarks.md has the figures.

`auto` (the default, or $TENSORGUESS_ENGINE) means OpenVINO unless TensorFlow sees a GPU,
and falls back to TensorFlow when OpenVINO cannot take a graph (an old tool's op it lacks).
A model answers in the precision its classifier was trained for: `auto` runs a graph in
bfloat16 only when its head learned from bfloat16 features (recorded in tensorguess.json),
so an old tool's graph runs in float32, as the old tool did.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from tensorguess.errors import TensorguessError, first_line
from tensorguess.features.engines.int8 import INT8, Calibration, quantized
from tensorguess.features.engines.openvino import (
    FLOAT32,
    OPENVINO_BATCH,
    compiled_runner,
    convert,
    load_converted,
    native_precision,
    openvino_core,
    store_converted,
)
from tensorguess.features.engines.tensorflow import (
    Runner,
    freeze_function,
    freeze_pixels_function,
    tensorflow_runner,
    tensorflow_sees_gpu,
)

ENGINES = ("auto", "openvino", "openvino-f32", "openvino-int8", "tensorflow")
ENGINE_VARIABLE = "TENSORGUESS_ENGINE"
INT8_ENGINE = "openvino-int8"
INT8_NEEDS_PHOTOS = (
    "openvino-int8 runs models quantised on training photos (train --engine openvino-int8 "
    "makes them); use --engine openvino here"
)
ENGINE_HELP = (
    "what runs the network: auto (the default, or $TENSORGUESS_ENGINE) is OpenVINO on a "
    "CPU and TensorFlow when it sees a GPU; openvino computes in OpenVINO's fastest "
    "precision (bfloat16 on CPUs with AMX or AVX-512 BF16), openvino-f32 and tensorflow "
    "in float32, openvino-int8 a classifier quantised to int8 by train --engine openvino-int8"
)
ENGINE_HELP_TRAIN = (
    f"{ENGINE_HELP}. The features' precision is recorded in tensorguess.json, and guess.sh "
    "and guessDir.sh run the model in it. openvino-int8 (installs NNCF on first use): int8 "
    "features, scales measured on 300 training photos, and the exported classifier in int8, "
    "kept only within 0.5 points of the float model's validation accuracy"
)
ENGINE_HELP_MODEL = (
    f"{ENGINE_HELP}. Under auto a model runs in the precision its head was trained on "
    "(tensorguess.json says which: bfloat16 for one trained by auto on a CPU with AMX or "
    "AVX-512 BF16); an old tool's graph runs in float32, as the old tool did"
)

__all__ = [
    "ENGINES",
    "ENGINE_HELP_MODEL",
    "ENGINE_HELP_TRAIN",
    "FLOAT32",
    "INT8_ENGINE",
    "INT8_NEEDS_PHOTOS",
    "OPENVINO_BATCH",
    "Runner",
    "cached_runner",
    "compiled_runner",
    "engine_precision",
    "freeze_function",
    "freeze_pixels_function",
    "function_runner",
    "graph_runner",
    "openvino_core",
    "requested_engine",
    "resolved_engine",
    "run_ahead",
    "tensorflow_runner",
]

Extra = TypeVar("Extra")


def requested_engine(engine: str | None = None) -> str:
    """The engine asked for: the flag, else $TENSORGUESS_ENGINE, else `auto`."""
    engine = engine or os.environ.get(ENGINE_VARIABLE) or "auto"
    if engine not in ENGINES:
        raise TensorguessError(
            f"unknown engine {engine!r} (from --engine or ${ENGINE_VARIABLE}): "
            f"choose one of {', '.join(ENGINES)}"
        )
    return engine


def resolved_engine(engine: str | None = None, precision: str | None = None) -> str:
    """`openvino`, `openvino-f32` or `tensorflow`: what `engine` means on this machine.

    `precision` is what the model's classifier was trained on (`f32`, `bf16`); under
    `auto`, OpenVINO then computes in float32 unless its own precision is that one.
    """
    engine = requested_engine(engine)
    if engine == "auto":
        if openvino_core() is None or tensorflow_sees_gpu():
            return "tensorflow"
        if precision is not None and precision != native_precision():
            return "openvino-f32"
        return "openvino"
    if engine.startswith("openvino") and openvino_core() is None:
        raise TensorguessError(
            f"engine {engine!r} needs the openvino package; reinstall tensorguess or use "
            "--engine tensorflow"
        )
    return engine


def engine_precision(engine: str) -> str:
    """The arithmetic a resolved engine uses: `f32`, `i8`, or OpenVINO's own choice (`bf16`...)."""
    if engine == INT8_ENGINE:
        return INT8
    return native_precision() if engine == "openvino" else FLOAT32


def graph_runner(
    graph_def,
    input_name: str,
    output_name: str | Sequence[str],
    shape: tuple[int, int, int],
    engine: str | None = None,
    precision: str | None = None,
    batch: int = OPENVINO_BATCH,
    cache_key: str | None = None,
    notes: dict | None = None,
    whole_pixels: bool = False,
    calibration: Calibration | None = None,
) -> tuple[Runner, str]:
    """(run, engine used): `run(pixels [B, *shape]) -> [B, ...]` over the frozen graph (a tuple
    of outputs when `output_name` is a sequence of names).

    `input_name` may be any float tensor inside the graph; OpenVINO gets the graph cut there
    and runs it `batch` images at a time (1 for the old tools' graphs, built for one image).
    With `cache_key`, the converted model is kept (with `notes`) for `cached_runner`.
    `whole_pixels`: the input takes pixel values 0-255 as they are (our graphs, the
    backbones), so OpenVINO can take the decoder's uint8. Under `openvino-int8` the model is
    quantised, its scales measured on the `calibration` photos (engines/int8.py).
    """
    asked = requested_engine(engine)
    engine = resolved_engine(asked, precision)
    if engine == INT8_ENGINE and calibration is None:
        raise TensorguessError(INT8_NEEDS_PHOTOS)
    if engine.startswith("openvino"):
        try:
            outputs = [output_name] if isinstance(output_name, str) else list(output_name)
            model = convert(graph_def, input_name, outputs, shape, batch, whole_pixels)
        except Exception as error:  # noqa: BLE001  (an op OpenVINO lacks, whatever it raises)
            if asked != "auto":
                raise TensorguessError(
                    f"OpenVINO cannot run this graph ({first_line(error)}); use --engine tensorflow"
                ) from None
            # Slower, and the user should know why: said, not hidden.
            print(
                f"tensorguess: OpenVINO cannot run this graph ({first_line(error)}); "
                "TensorFlow runs it instead (slower)",
                file=sys.stderr,
            )
        else:
            if calibration is not None and engine == INT8_ENGINE:
                model = quantized(model, calibration, shape[:2])
            if cache_key:
                store_converted(cache_key, model, notes or {})
            return compiled_runner(model, float32=engine == "openvino-f32"), engine
    return tensorflow_runner(graph_def, input_name, output_name), "tensorflow"


def function_runner(
    function,
    shape: tuple[int, ...],
    engine: str | None = None,
    cache_key: str | None = None,
    whole_pixels: bool = False,
    calibration: Calibration | None = None,
) -> tuple[Runner, str]:
    """(run, engine used) of `function(values [B, *shape] float32)`: the converted model
    kept under `cache_key` when there is one (no freezing, no TensorFlow), else the function
    frozen and handed to `graph_runner` (which keeps it under `cache_key`)."""
    if cache_key:
        cached = cached_runner(cache_key, engine)
        if cached is not None:
            return cached[:2]
    graph_def, input_name, output_name = freeze_function(function, shape)
    return graph_runner(
        graph_def,
        input_name,
        output_name,
        shape,
        engine,
        cache_key=cache_key,
        whole_pixels=whole_pixels,
        calibration=calibration,
    )


def cached_runner(
    cache_key: str, engine: str | None = None, precision: str | None = None
) -> tuple[Runner, str, dict] | None:
    """(run, engine, notes) from a model `graph_runner` kept, or None (then build it anew).

    Needs no TensorFlow: guess and guessDir start in about a second the second time.
    """
    engine = resolved_engine(engine, precision)
    if not engine.startswith("openvino"):
        return None
    found = load_converted(cache_key)
    if found is None:
        return None
    model, notes = found
    try:
        runner = compiled_runner(model, float32=engine == "openvino-f32")
    except Exception:  # noqa: BLE001  (a damaged entry is rebuilt, whatever is wrong)
        return None
    return runner, engine, notes


def run_ahead(
    run: Runner, batches: Iterable[tuple[np.ndarray, Extra]]
) -> Iterator[tuple[np.ndarray, Extra]]:
    """Yield (run(pixels), extra) per batch, in order, running the next batch meanwhile.

    The caller's work on one batch's results (copying files, writing the cache) overlaps
    with the network running on the next.
    """
    with ThreadPoolExecutor(1) as worker:
        pending = None
        for pixels, extra in batches:
            future = worker.submit(run, pixels)
            if pending is not None:
                yield pending[0].result(), pending[1]
            pending = (future, extra)
        if pending is not None:
            yield pending[0].result(), pending[1]
