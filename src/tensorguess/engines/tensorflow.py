"""The TensorFlow engine: the reference, the GPU engine, and what freezes our graphs.

Importing TensorFlow costs seconds, so nothing here imports it at module level: a model
that OpenVINO has converted before runs without it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np

# run(pixels or bytes) -> the output, or a tuple of the outputs when a graph has several.
Runner = Callable[[np.ndarray], np.ndarray | tuple[np.ndarray, ...]]


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
    with muted_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()


@contextmanager
def muted_stderr() -> Iterator[None]:
    """Keep what native code prints to standard error (file descriptor 2) off the terminal
    while the block runs; if the block fails, show it after all."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextmanager
def quiet_tensorflow_logger() -> Iterator[None]:
    """Silence TensorFlow's Python logger below errors for a while.

    Some of its warnings read like faults but describe what we do on purpose (TF1
    signature helpers "deprecated", a new function per distorted view "retracing").
    """
    import_tensorflow_quietly()
    import tensorflow as tf

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


@lru_cache(maxsize=1)
def tensorflow_sees_gpu() -> bool:
    """Whether TensorFlow has a GPU to run on."""
    # TensorFlow's GPUs are NVIDIA's: without their device node, there is no need to pay
    # for importing TensorFlow (seconds) just to hear it say so.
    if not Path("/dev/nvidiactl").exists():
        return False
    import_tensorflow_quietly()
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def tensorflow_runner(graph_def, input_name: str, output_name: str | Sequence[str]) -> Runner:
    """`run(feed)` over the graph with TensorFlow (feeds and fetches any tensor); several
    output names give a tuple of outputs, in their order."""
    import_tensorflow_quietly()
    import tensorflow as tf

    def import_graph():
        tf.compat.v1.import_graph_def(graph_def, name="")

    names = [output_name] if isinstance(output_name, str) else list(output_name)
    wrapped = tf.compat.v1.wrap_function(import_graph, [])
    pruned = wrapped.prune(
        feeds=[wrapped.graph.get_tensor_by_name(f"{input_name}:0")],
        fetches=[wrapped.graph.get_tensor_by_name(f"{name}:0") for name in names],
    )

    def run(feed: np.ndarray | bytes) -> np.ndarray | tuple[np.ndarray, ...]:
        # Pixels (any numeric type) become float32; encoded bytes go in as they are.
        outputs = pruned(tf.constant(feed if isinstance(feed, bytes) else np.float32(feed)))
        outputs = [np.asarray(output) for output in outputs]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    return run


def freeze_pixels_function(function, image_size: int):
    """(graph_def, input name, output name) of `function(pixels [B, S, S, 3] float32)`, frozen;
    a function of several outputs gives the tuple of their names."""
    import_tensorflow_quietly()
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="pixels")
    frozen = convert_variables_to_constants_v2(tf.function(function).get_concrete_function(spec))
    outputs = tuple(output.name.split(":")[0] for output in frozen.outputs)
    return (
        frozen.graph.as_graph_def(),
        frozen.inputs[0].name.split(":")[0],
        outputs[0] if len(outputs) == 1 else outputs,
    )
