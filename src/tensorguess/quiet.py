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
