"""The TensorFlow engine: the reference, the GPU engine, and what freezes our graphs.

Importing TensorFlow costs seconds, so nothing here imports it at module level: a model
that OpenVINO has converted before runs without it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from tensorguess.quiet import import_tensorflow_quietly

# run(pixels or bytes) -> the output, or a tuple of the outputs when a graph has several.
Runner = Callable[[np.ndarray], np.ndarray | tuple[np.ndarray, ...]]


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


def save_graph_signatures(folder: Path, signature_def_map: dict) -> None:
    """Save the TF1 graph being built (the default graph, with no variables to restore) as a
    SavedModel in `folder`, serving `signature_def_map`."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    builder = tf1.saved_model.Builder(str(folder))
    with tf1.Session() as session:
        builder.add_meta_graph_and_variables(
            session,
            [tf1.saved_model.tag_constants.SERVING],
            signature_def_map=signature_def_map,
            strip_default_attrs=True,
        )
    builder.save()


def freeze_pixels_function(function, image_size: int):
    """(graph_def, input name, output name) of `function(pixels [B, S, S, 3] float32)`, frozen;
    a function of several outputs gives the tuple of their names."""
    return freeze_function(function, (image_size, image_size, 3), "pixels")


def freeze_function(function, shape: Sequence[int], input_name: str = "values"):
    """(graph_def, input name, output name) of `function(values [B, *shape] float32)`,
    frozen; a function of several outputs gives the tuple of their names."""
    import_tensorflow_quietly()
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    spec = tf.TensorSpec([None, *shape], tf.float32, name=input_name)
    frozen = convert_variables_to_constants_v2(tf.function(function).get_concrete_function(spec))
    outputs = tuple(output.name.split(":")[0] for output in frozen.outputs)
    return (
        frozen.graph.as_graph_def(),
        frozen.inputs[0].name.split(":")[0],
        outputs[0] if len(outputs) == 1 else outputs,
    )
