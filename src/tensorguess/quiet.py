"""Keeping the libraries' noise off the user's terminal: TensorFlow's start-up notices and
its Python logger, and what native code prints to standard error.

Shared by every wing: TensorFlow decodes old tools' photos (data), runs and freezes graphs
(features), and converts exports; each imports it through here.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

# What TensorFlow reads from the environment when it starts; a value the user set is kept.
# oneDNN's kernels: TensorFlow turns them on by itself only on x86 CPUs with AVX-512 VNNI or
# newer. On a CPU with AVX2 alone they made the default preset's fine-tuning epochs on 2,726
# photos 30-33 s instead of 39-46 s, and its whole `train` on 3,066 photos 4 min 38 s
# instead of 6 min 1 s (docs/accuracy.md); `TF_ENABLE_ONEDNN_OPTS=0` turns them off again.
TENSORFLOW_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "KERAS_BACKEND": "tensorflow",
    "TF_ENABLE_ONEDNN_OPTS": "1",
}


def set_tensorflow_environment() -> None:
    """TENSORFLOW_ENVIRONMENT's values, where the environment has none: before TensorFlow
    starts, for this process and the processes it starts."""
    for name, value in TENSORFLOW_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow (in TENSORFLOW_ENVIRONMENT) and probe its devices with standard
    error muted (once).

    TensorFlow 2.21 prints CUDA and oneDNN notices through absl before any log level
    applies; they would bury our one-line messages. If the import fails, its output is
    shown after all.
    """
    if "tensorflow" in sys.modules:
        return
    set_tensorflow_environment()
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
