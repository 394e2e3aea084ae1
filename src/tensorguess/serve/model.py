"""The model a server answers with, and the switch to the next one train.sh writes.

train.sh writes the graph, the labels and tensorguess.json under temporary names and then
renames them into place back to back (training/model_writer.py). The server looks at
those three files every second; once they have changed and train.sh is done (its lock file
is gone), it loads the new model on a thread, beside the old one, and takes it only when the
three agree (tensorguess.json names the graph's SHA-256 and the labels), so a model caught
between two renames is never served: it is tried again at the next look. The switch is
one assignment: a request takes the model once, when it starts, and finishes on it, so
requests in flight finish on the old model while new ones get the new one. A new model
that cannot be loaded is reported once, and the old one stays.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from tensorguess.classify.classifier import Classifier
from tensorguess.classify.loading import load_classifier
from tensorguess.classify.model_reader import read_metadata
from tensorguess.errors import TensorguessError
from tensorguess.files import LOCK_FILE
from tensorguess.model_files import GRAPH_FILE, LABELS_FILE, METADATA_FILE

# How often the files are looked at, and how many times a model whose files disagree is
# tried again before the server says so (train.sh renames them within milliseconds).
POLL_SECONDS = 1.0
DISAGREEING_TRIES = 5
# train.sh holds TF_FILES/.tensorguess.lock until it is done, and its last step after the
# export converts the new model for OpenVINO into the cache: a server that waits for it
# loads the model in a second, where converting it itself would take TensorFlow and many
# seconds. A lock file left by a killed train is waited for this long at most.
TRAIN_WAIT_SECONDS = 120.0

Stamp = tuple


class ModelChanging(TensorguessError):
    """The model's files disagree: train.sh is renaming them into place."""


@dataclass(frozen=True)
class ServedModel:
    """A loaded classifier and what the API says about it."""

    classifier: Classifier
    version: int
    stamp: Stamp
    metadata: dict

    @property
    def labels(self) -> list[str]:
        return self.classifier.labels


def model_stamp(tf_files: Path) -> Stamp:
    """What changes when train.sh writes a new model: each model file's identity and time."""
    stamp = []
    for name in (GRAPH_FILE, LABELS_FILE, METADATA_FILE):
        try:
            status = os.stat(tf_files / name)
        except OSError:
            stamp.append(None)
        else:
            stamp.append((status.st_ino, status.st_size, status.st_mtime_ns))
    return tuple(stamp)


def _version(metadata: dict, tf_files: Path) -> int:
    """TF Serving's version number: when the model was trained, in seconds since 1970."""
    try:
        return int(datetime.datetime.fromisoformat(metadata["trained_at"]).timestamp())
    except (KeyError, TypeError, ValueError):
        return int((tf_files / GRAPH_FILE).stat().st_mtime)


def load_served_model(tf_files: Path, engine: str | None) -> ServedModel:
    """The model in `tf_files`, if its files agree; `ModelChanging` when they do not yet."""
    tf_files = Path(tf_files)
    stamp = model_stamp(tf_files)
    metadata = read_metadata(tf_files)
    classifier = load_classifier(tf_files, engine=engine)
    if not classifier.takes_pixels:
        raise TensorguessError(
            f"{classifier.graph_path}: a graph made by an old tool; tensorguess serve runs "
            "models trained by train.sh (train one on the same photos)"
        )
    if metadata and (
        metadata.get("graph_sha256") != classifier.graph_sha256
        or metadata.get("labels") != classifier.labels
        or read_metadata(tf_files) != metadata
    ):
        raise ModelChanging(f"{tf_files}: the model files disagree (train.sh is writing them?)")
    return ServedModel(classifier, _version(metadata, tf_files), stamp, metadata)


def first_model(tf_files: Path, engine: str | None) -> ServedModel:
    """The model to start with; if train.sh is renaming its files, a moment later."""
    for _ in range(DISAGREEING_TRIES - 1):
        try:
            return load_served_model(tf_files, engine)
        except ModelChanging:
            pass
    return load_served_model(tf_files, engine)


class LiveModel:
    """The model being served now (`current`), switched when train.sh writes a new one."""

    def __init__(
        self, tf_files: Path, engine: str | None, first: ServedModel, say: Callable[[str], None]
    ):
        self.tf_files, self.engine, self.current, self.say = Path(tf_files), engine, first, say

    async def watch(self, every: float = POLL_SECONDS) -> None:
        """Look for a new model every `every` seconds, forever (cancel to stop). Whatever
        fails, the old model stays: the failure is reported once, and the watch goes on."""
        refused: Stamp | None = None
        tries = 0
        waited = 0.0
        while True:
            await asyncio.sleep(every)
            stamp = None
            try:
                stamp = model_stamp(self.tf_files)
                if stamp in (self.current.stamp, refused):
                    continue
                if (self.tf_files / LOCK_FILE).exists() and waited < TRAIN_WAIT_SECONDS:
                    waited += every  # train.sh is finishing: its converted model is on its way
                    continue
                waited = 0.0
                new = await asyncio.to_thread(load_served_model, self.tf_files, self.engine)
            except ModelChanging as problem:
                tries += 1
                if tries < DISAGREEING_TRIES:
                    continue
                error = problem
            except Exception as problem:  # noqa: BLE001  (an OpenVINO compile error, a full disk...)
                error = problem
            else:
                tries = 0
                # Versions only go up, even for two models trained within one second.
                version = max(new.version, self.current.version + 1)
                self.current = replace(new, version=version)
                self.say(
                    f"tensorguess serve: now serving the new model in {self.tf_files} "
                    f"(version {version}; labels: {', '.join(new.labels)})"
                )
                continue
            tries, refused = 0, stamp
            self._report(error)

    def _report(self, error: Exception) -> None:
        """Say why the new model is not served; with the traceback when it is not one of ours."""
        if isinstance(error, TensorguessError):
            reason = str(error)
        else:
            trace = "".join(traceback.format_exception(error)).rstrip()
            reason = f"{type(error).__name__}: {error} (the traceback follows)\n{trace}"
        self.say(
            f"tensorguess serve: still serving version {self.current.version}; "
            f"the new model cannot be loaded: {reason}"
        )
