"""Training again from the page: train.sh's own training in a process of its own.

`tensorguess train TF_FILES --preset P`, P the preset tensorguess.json records (the
default preset before any model), with the backbone and the validation and test
percentages it records too, so that the new test accuracy is measured as the old one was;
as a separate process: it takes TF_FILES' train lock itself (a train.sh started meanwhile
is refused), imports TensorFlow there rather than in the server, and a crash of it leaves
the server standing. While a train.sh runs, starting is refused at once. Its lines are
the progress; its test accuracy, from tensorguess.json once it is done, goes beside the
one before.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from tensorguess.classify.model_reader import read_metadata
from tensorguess.errors import TensorguessError
from tensorguess.files import folder_lock
from tensorguess.review.actions import Refused
from tensorguess.training.presets import DEFAULT_PRESET

IDLE, RUNNING, DONE, FAILED = "idle", "running", "done", "failed"
LINES_KEPT = 12
# What tensorguess.json records of how the model was trained, kept for the next training.
RECORDED_FLAGS = ("backbone", "validation_percentage", "testing_percentage")


class Retraining:
    """The training started from the page: at most one at a time, watched by a thread."""

    def __init__(self, tf_files: Path, when_done: Callable[[], None]) -> None:
        self.tf_files = Path(tf_files)
        self.when_done = when_done
        self.status = IDLE
        self.lines: deque[str] = deque(maxlen=LINES_KEPT)
        self.preset = ""
        self.old_accuracy: float | None = None
        self.new_accuracy: float | None = None
        self.started = self.seconds = 0.0
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        """Whether a training started here is still running."""
        return self.status == RUNNING

    def state(self) -> dict:
        """Where the training stands, as the API shows it."""
        seconds = time.monotonic() - self.started if self.running else self.seconds
        return {
            "status": self.status,
            "preset": self.preset,
            "progress": self.lines[-1] if self.lines else "",
            "lines": list(self.lines),
            "seconds": round(seconds, 1) if self.started else None,
            "old_test_accuracy": self.old_accuracy,
            "new_test_accuracy": self.new_accuracy,
        }

    def start(self) -> None:
        """Start a training; `Refused` (409) while one runs, here or from train.sh."""
        with self._lock:
            if self.running:
                raise Refused(409, "a training started here is running already")
            try:
                with folder_lock(self.tf_files, "train"):
                    pass
            except TensorguessError as error:
                raise Refused(409, str(error)) from None
            trained = read_metadata(self.tf_files)
            self.preset = str(trained.get("preset") or DEFAULT_PRESET)
            flags = ["--preset", self.preset]
            for name in RECORDED_FLAGS:
                if trained.get(name) is not None:
                    flags += [f"--{name}", str(trained[name])]
            self.old_accuracy = trained.get("test_accuracy")
            self.new_accuracy = None
            self.lines.clear()
            self.started, self.status = time.monotonic(), RUNNING
            command = [sys.executable, "-m", "tensorguess", "train", str(self.tf_files)]
            process = subprocess.Popen(
                [*command, *flags],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                env={**os.environ, "TENSORGUESS_PROGRESS": "0"},
            )
            threading.Thread(target=self._watch, args=(process,), daemon=True).start()

    def _watch(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip():
                self.lines.append(line.rstrip())
        code = process.wait()
        self.seconds = time.monotonic() - self.started
        if code == 0:
            self.new_accuracy = read_metadata(self.tf_files).get("test_accuracy")
        else:
            self.lines.append(f"train exited with code {code}")
        self.when_done()  # the list is being made again before the page hears it is done
        self.status = DONE if code == 0 else FAILED
