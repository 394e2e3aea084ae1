"""The OpenVINO engine: the fast one on CPUs, and its cache of converted models.

OpenVINO runs the graph cut at its pixel input with a fixed small batch and two requests
in flight (one per core pair), which on this project's 2-core machine computes
EfficientNet-Lite0 features about 2x faster than TensorFlow in float32 and about 5x faster
in bfloat16, the precision OpenVINO picks by itself on CPUs with AMX (and on CPUs with
AVX-512 BF16 without AMX, such as AMD's Zen 4). Converting a graph
costs seconds and needs TensorFlow, so converted models are kept on disk
(`$TENSORGUESS_CACHE_DIR/openvino/<key>-v<version>-ov<release>/`), written whole or not
at all; a damaged entry is converted again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from tensorguess.features.engines.tensorflow import Runner
from tensorguess.files import cache_directories, cache_directory, replace_directory_atomic

# OpenVINO runs fixed-shape batches: one shape compiles once and runs fastest. Eight images
# per request, two requests at a time, measured best on 2 cores (docs/benchmarks.md).
OPENVINO_BATCH = 8
# Bump when the cut or the conversion changes, so older cached models are not reused.
CACHE_VERSION = 3
# Converted models kept on disk, the least recently used dropped first.
MAX_CACHED_MODELS = 16
FLOAT32 = "f32"

# Importing openvino imports its converter, which sends usage statistics (to Google
# Analytics, unless the user opted out) and writes ~/intel, if it can import
# `openvino_telemetry`; without it, it falls back to a silent stub of its own. A tool that
# works offline sends nothing: an entry of None in sys.modules makes that import fail, in
# this process only, without touching the user's files. Every import of openvino in
# tensorguess comes after this module's.
if "openvino" not in sys.modules:
    sys.modules.setdefault("openvino_telemetry", None)


@lru_cache(maxsize=1)
def openvino_core():
    """OpenVINO's Core, or None when the package is missing."""
    try:
        import openvino
    except ImportError:
        return None
    return openvino.Core()


def native_precision() -> str:
    """The arithmetic OpenVINO picks by itself on this CPU: `bf16` with AMX, else `f32`."""
    return openvino_core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()


def cut_at_input(graph_def, input_name: str, outputs: Sequence[str], shape: tuple[int, ...]):
    """The part of `graph_def` from a float placeholder named `input_name` to `outputs`."""
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
    # Keep what the outputs depend on (the decoder upstream of the input falls away).
    nodes = {node.name: node for node in cut.node}
    needed, todo = set(), list(outputs)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo += [source.lstrip("^").split(":")[0] for source in nodes[name].input]
    del cut.node[:]
    cut.node.extend(node for node in nodes.values() if node.name in needed)
    return cut


def convert(
    graph_def,
    input_name: str,
    outputs: Sequence[str],
    shape: tuple[int, ...],
    batch: int,
    whole_pixels: bool,
):
    """The graph from `input_name` to `outputs` as an OpenVINO model of fixed `batch`, its
    outputs in that order.

    `whole_pixels`: the input takes 0-255 as they are, so the decoder's uint8 go in as they
    are; OpenVINO converts them inside, in parallel, and a batch travels in a quarter of
    the memory.
    """
    import openvino
    from openvino.preprocess import PrePostProcessor

    model = openvino.convert_model(cut_at_input(graph_def, input_name, outputs, shape))
    if len(outputs) > 1:  # the converter orders several outputs its own way
        results = [model.output(f"{name}:0") for name in outputs]
        model = openvino.Model(results, model.get_parameters())
    model.reshape({model.inputs[0].any_name: [batch, *shape]})
    if whole_pixels:
        steps = PrePostProcessor(model)
        steps.input().tensor().set_element_type(openvino.Type.u8)
        model = steps.build()
    return model


def compiled_runner(model, float32: bool) -> Runner:
    """`run(pixels [B, ...]) -> outputs [B, ...]` over `model`, any B, in fixed batches; a
    model of several outputs gives a tuple of them, in its order.

    The batches go to a few infer requests in turn, each started as soon as its previous
    batch is collected, so they all keep working. No Python callback: OpenVINO's threads
    would then take the GIL to run it (and to release its arguments) at any moment, even
    while the interpreter shuts down, which ends the process in `std::terminate`.
    """
    config = {"PERFORMANCE_HINT": "THROUGHPUT", "ENABLE_CPU_PINNING": False}
    if float32:
        config["INFERENCE_PRECISION_HINT"] = FLOAT32
    compiled = openvino_core().compile_model(model, "CPU", config)
    batch = compiled.inputs[0].get_shape()[0]
    input_type = compiled.inputs[0].get_element_type().to_dtype()
    count = max(1, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    requests = [compiled.create_infer_request() for _ in range(count)]
    outputs = len(compiled.outputs)

    def collected(request) -> list[np.ndarray]:
        request.wait()
        return [request.get_output_tensor(i).data.copy() for i in range(outputs)]

    def run(pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, input_type)
        total = len(pixels)
        padded = -total % batch
        if padded:
            pixels = np.concatenate([pixels, np.zeros((padded, *pixels.shape[1:]), input_type)])
        batches = len(pixels) // batch
        results: list = [None] * batches
        for index in range(batches + len(requests)):
            request = requests[index % len(requests)]
            earlier = index - len(requests)  # the batch this request had before, if any
            if 0 <= earlier < batches:
                results[earlier] = collected(request)
            if index < batches:
                request.start_async({0: pixels[index * batch : (index + 1) * batch]})
        joined = tuple(np.concatenate(parts)[:total] for parts in zip(*results, strict=True))
        return joined if outputs > 1 else joined[0]

    return run


def _entry_name(cache_key: str) -> str:
    import openvino

    release = openvino.__version__.split("-")[0]  # "2026.4.1-22982-.../2026/4" has slashes
    safe_key = re.sub(r"[^A-Za-z0-9._-]", "_", cache_key)
    return f"{safe_key}-v{CACHE_VERSION}-ov{release}"


def load_converted(cache_key: str) -> tuple[object, dict] | None:
    """(model, notes) that `store_converted` kept under `cache_key`, or None."""
    core = openvino_core()
    for root in cache_directories("openvino"):
        folder = root / _entry_name(cache_key)
        if not (folder / "notes.json").is_file():
            continue
        try:
            notes = json.loads((folder / "notes.json").read_text(encoding="utf-8"))
            model = core.read_model(str(folder / "model.xml"))
        except Exception:  # noqa: BLE001  (a damaged entry is rebuilt, whatever is wrong)
            continue
        try:
            os.utime(folder)  # recently used: kept when old entries are pruned
        except OSError:
            pass
        return model, notes
    return None


def store_converted(cache_key: str, model, notes: dict) -> None:
    """Keep a converted model, whole or not at all; a read-only cache just goes without."""
    root = cache_directory("openvino")
    try:
        save_model_folder(root / _entry_name(cache_key), model, notes)
        prune(root)
    except OSError:
        pass


def save_model_folder(folder: Path, model, notes: dict) -> None:
    """Write `model` (model.xml and .bin) and its `notes` (notes.json) into `folder`, whole or
    not at all, replacing an older one."""
    import openvino

    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".tmp-{folder.name}.", dir=folder.parent) as scratch:
        built = Path(scratch) / "model"
        built.mkdir()
        openvino.save_model(model, str(built / "model.xml"), compress_to_fp16=False)
        (built / "notes.json").write_text(json.dumps(notes, indent=2) + "\n", encoding="utf-8")
        replace_directory_atomic(built, folder)


def prune(root: Path) -> None:
    """Keep the most recently used converted models; every train adds one (10-20 MB)."""
    entries = sorted(
        (entry for entry in root.iterdir() if not entry.name.startswith(".")),
        key=lambda entry: entry.stat().st_mtime,
        reverse=True,
    )
    for entry in entries[MAX_CACHED_MODELS:]:
        shutil.rmtree(entry, ignore_errors=True)
