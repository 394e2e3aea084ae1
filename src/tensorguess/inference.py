"""Inference: run a frozen graph from decoded pixels to an output, as fast as the CPU allows.

Two engines run the same frozen GraphDef. TensorFlow is the reference. OpenVINO, on
CPUs, runs the graph cut at its pixel input with a fixed small batch and two requests in
flight (one per core pair), which on this project's 2-core machine computes EfficientNet-
Lite0 features about 2x faster than TensorFlow in float32 and about 5x faster in bfloat16,
the precision OpenVINO picks by itself on CPUs with AMX. Tests check that both engines'
features and scores agree within stated tolerances; docs/benchmarks.md has the figures.

`auto` (the default, or $TENSORGUESS_ENGINE) means OpenVINO unless TensorFlow sees a GPU,
and falls back to TensorFlow when OpenVINO cannot take a graph (an old tool's op it lacks).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import numpy as np

from tensorguess.errors import TensorguessError
from tensorguess.files import cache_directory

ENGINES = ("auto", "openvino", "openvino-f32", "tensorflow")
ENGINE_VARIABLE = "TENSORGUESS_ENGINE"
# OpenVINO runs fixed-shape batches: one shape compiles once and runs fastest. Eight images
# per request, two requests at a time, measured best on 2 cores (docs/benchmarks.md).
OPENVINO_BATCH = 8
# Bump when the cut or the conversion changes, so older cached models are not reused.
OPENVINO_CACHE_VERSION = 2
# Converted models kept on disk, the least recently used dropped first.
MAX_CACHED_MODELS = 16


def requested_engine(engine: str | None = None) -> str:
    """The engine asked for: the flag, else $TENSORGUESS_ENGINE, else `auto`."""
    engine = engine or os.environ.get(ENGINE_VARIABLE) or "auto"
    if engine not in ENGINES:
        raise TensorguessError(
            f"unknown engine {engine!r} (from --engine or ${ENGINE_VARIABLE}): "
            f"choose one of {', '.join(ENGINES)}"
        )
    return engine


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and probe its devices with standard error muted (once).

    TensorFlow 2.21 prints CUDA and oneDNN notices through absl before any log level
    applies; they would bury our one-line messages. If the import fails, its output is
    shown after all.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@lru_cache(maxsize=1)
def _tensorflow_sees_gpu() -> bool:
    # TensorFlow's GPUs are NVIDIA's: without their device node, there is no need to pay
    # for importing TensorFlow (seconds) just to hear it say so.
    if not Path("/dev/nvidiactl").exists():
        return False
    import_tensorflow_quietly()
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


@lru_cache(maxsize=1)
def _openvino_core():
    try:
        import openvino
    except ImportError:
        return None
    return openvino.Core()


def resolved_engine(engine: str | None = None) -> str:
    """`openvino`, `openvino-f32` or `tensorflow`: what `engine` means on this machine."""
    engine = requested_engine(engine)
    if engine == "auto":
        if _openvino_core() is None or _tensorflow_sees_gpu():
            return "tensorflow"
        return "openvino"
    if engine.startswith("openvino") and _openvino_core() is None:
        raise TensorguessError(
            f"engine {engine!r} needs the openvino package; reinstall tensorguess or use "
            "--engine tensorflow"
        )
    return engine


def engine_precision(engine: str) -> str:
    """The arithmetic a resolved engine uses: `f32`, or OpenVINO's own choice (`bf16`...)."""
    if engine != "openvino":
        return "f32"
    return _openvino_core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()


Runner = Callable[[np.ndarray], np.ndarray]
Extra = TypeVar("Extra")


def graph_runner(
    graph_def,
    input_name: str,
    output_name: str,
    shape: tuple[int, int, int],
    engine: str | None = None,
    batch: int = OPENVINO_BATCH,
    cache_key: str | None = None,
    notes: dict | None = None,
    whole_pixels: bool = False,
) -> tuple[Runner, str]:
    """(run, engine used): `run(pixels [B, *shape]) -> [B, ...]` over the frozen graph.

    `input_name` may be any float tensor inside the graph; OpenVINO gets the graph cut there
    and runs it `batch` images at a time (1 for the old tools' graphs, built for one image).
    With `cache_key`, the converted model is kept (with `notes`) for `cached_runner`.
    `whole_pixels`: the input takes pixel values 0-255 as they are (our graphs, the
    backbones), so OpenVINO can take the decoder's uint8.
    """
    asked = requested_engine(engine)
    engine = resolved_engine(asked)
    if engine.startswith("openvino"):
        try:
            model = _convert(graph_def, input_name, output_name, shape, batch, whole_pixels)
        except Exception as error:  # noqa: BLE001  (an op OpenVINO lacks, whatever it raises)
            if asked != "auto":
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
                raise TensorguessError(
                    f"OpenVINO cannot run this graph ({reason}); use --engine tensorflow"
                ) from None
        else:
            if cache_key:
                _store(cache_key, model, notes or {})
            return _openvino_runner(model, engine), engine
    return tensorflow_runner(graph_def, input_name, output_name), "tensorflow"


def cached_runner(cache_key: str, engine: str | None = None) -> tuple[Runner, str, dict] | None:
    """(run, engine, notes) from a model `graph_runner` kept, or None (then build it anew).

    Needs no TensorFlow: guess and guessDir start in about a second the second time.
    """
    engine = resolved_engine(engine)
    folder = _cache_folder(cache_key)
    if not engine.startswith("openvino") or not (folder / "notes.json").is_file():
        return None
    try:
        notes = json.loads((folder / "notes.json").read_text(encoding="utf-8"))
        model = _openvino_core().read_model(str(folder / "model.xml"))
        runner = _openvino_runner(model, engine)
    except Exception:  # noqa: BLE001  (a damaged cache entry is rebuilt, whatever is wrong)
        return None
    try:
        os.utime(folder)  # recently used: kept when old entries are pruned
    except OSError:
        pass
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


def tensorflow_runner(graph_def, input_name: str, output_name: str) -> Runner:
    """`run(feed)` over the graph with TensorFlow (feeds and fetches any tensor)."""
    import_tensorflow_quietly()
    import tensorflow as tf

    def import_graph():
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(import_graph, [])
    pruned = wrapped.prune(
        feeds=[wrapped.graph.get_tensor_by_name(f"{input_name}:0")],
        fetches=[wrapped.graph.get_tensor_by_name(f"{output_name}:0")],
    )

    def run(feed: np.ndarray | bytes) -> np.ndarray:
        # Pixels (any numeric type) become float32; encoded bytes go in as they are.
        outputs = pruned(tf.constant(feed if isinstance(feed, bytes) else np.float32(feed)))
        return np.asarray(outputs[0] if isinstance(outputs, list | tuple) else outputs)

    return run


def cut_at_input(graph_def, input_name: str, output_name: str, shape: tuple[int, ...]):
    """The part of `graph_def` from a float placeholder named `input_name` to `output_name`."""
    import tensorflow as tf

    cut = tf.compat.v1.GraphDef()
    cut.versions.CopyFrom(graph_def.versions)
    cut.library.CopyFrom(graph_def.library)
    found = False
    for node in graph_def.node:
        if node.name == input_name:
            found = True
            placeholder = cut.node.add()
            placeholder.name, placeholder.op = input_name, "Placeholder"
            placeholder.attr["dtype"].type = tf.float32.as_datatype_enum
            placeholder.attr["shape"].shape.CopyFrom(tf.TensorShape([None, *shape]).as_proto())
        else:
            cut.node.add().CopyFrom(node)
    if not found:
        raise KeyError(input_name)
    # Keep what `output_name` depends on (the decoder upstream of the input falls away).
    nodes = {node.name: node for node in cut.node}
    needed, todo = set(), [output_name]
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo += [source.lstrip("^").split(":")[0] for source in nodes[name].input]
    del cut.node[:]
    cut.node.extend(node for node in nodes.values() if node.name in needed)
    return cut


def _convert(
    graph_def,
    input_name: str,
    output_name: str,
    shape: tuple[int, ...],
    batch: int,
    whole_pixels: bool,
):
    import openvino
    from openvino.preprocess import PrePostProcessor

    model = openvino.convert_model(cut_at_input(graph_def, input_name, output_name, shape))
    model.reshape({model.inputs[0].any_name: [batch, *shape]})
    if whole_pixels:
        # The decoder's uint8 go in as they are; OpenVINO converts them inside, in parallel,
        # and a batch travels in a quarter of the memory.
        steps = PrePostProcessor(model)
        steps.input().tensor().set_element_type(openvino.Type.u8)
        model = steps.build()
    return model


def _cache_folder(cache_key: str) -> Path:
    import openvino

    release = openvino.__version__.split("-")[0]  # "2026.4.1-22982-.../2026/4" has slashes
    return cache_directory("openvino") / f"{cache_key}-v{OPENVINO_CACHE_VERSION}-ov{release}"


def _store(cache_key: str, model, notes: dict) -> None:
    """Keep a converted model, whole or not at all; a read-only cache just goes without."""
    import openvino

    folder = _cache_folder(cache_key)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".tmp-", dir=folder.parent) as scratch:
            built = Path(scratch) / "model"
            built.mkdir()
            openvino.save_model(model, str(built / "model.xml"), compress_to_fp16=False)
            (built / "notes.json").write_text(json.dumps(notes), encoding="utf-8")
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(built, folder)
        _prune(folder.parent)
    except OSError:
        pass


def _prune(root: Path) -> None:
    """Keep the most recently used converted models; every train adds one (10-20 MB)."""
    entries = sorted(
        (entry for entry in root.iterdir() if not entry.name.startswith(".")),
        key=lambda entry: entry.stat().st_mtime,
        reverse=True,
    )
    for entry in entries[MAX_CACHED_MODELS:]:
        shutil.rmtree(entry, ignore_errors=True)


def _openvino_runner(model, engine: str) -> Runner:
    import openvino

    config = {"PERFORMANCE_HINT": "THROUGHPUT", "ENABLE_CPU_PINNING": False}
    if engine == "openvino-f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    compiled = _openvino_core().compile_model(model, "CPU", config)
    batch = compiled.inputs[0].get_shape()[0]
    input_type = compiled.inputs[0].get_element_type().to_dtype()
    requests = openvino.AsyncInferQueue(
        compiled, max(1, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    )

    def collect(request, slot: tuple[list, int]) -> None:
        results, index = slot
        results[index] = request.get_output_tensor(0).data.copy()

    requests.set_callback(collect)

    def run(pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, input_type)
        count = len(pixels)
        padded = -count % batch
        if padded:
            pixels = np.concatenate([pixels, np.zeros((padded, *pixels.shape[1:]), input_type)])
        results: list = [None] * (len(pixels) // batch)
        for index in range(len(results)):
            requests.start_async({0: pixels[index * batch : (index + 1) * batch]}, (results, index))
        requests.wait_all()
        return np.concatenate(results)[:count]

    return run


def freeze_pixels_function(function, image_size: int):
    """(graph_def, input name, output name) of `function(pixels [B, S, S, 3] float32)`, frozen."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="pixels")
    frozen = convert_variables_to_constants_v2(tf.function(function).get_concrete_function(spec))
    return (
        frozen.graph.as_graph_def(),
        frozen.inputs[0].name.split(":")[0],
        frozen.outputs[0].name.split(":")[0],
    )
