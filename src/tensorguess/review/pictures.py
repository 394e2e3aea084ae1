"""The page's pictures: thumbnails, and heat maps of where the model found the evidence for
its best label (quality/explain.py), both kept by content.

A heat map needs TensorFlow (seconds to import, once) and the model's gradients: it is made
on a thread of its own, one photo at a time, never on the event loop; a request for one not
made yet starts it and is answered at once that it is coming. A model trained since is a
new model: its maps are made again.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from tensorguess.data.images import UnreadableImage, load_upright
from tensorguess.errors import TensorguessError

THUMBNAIL_SIDE = 240
HEAT_SIDE = 360
KEPT = 512  # of each kind, the most recently made


class NoHeatMap(Exception):
    """Why a photo has no heat map (no model yet, a model that cannot be explained...)."""


def thumbnail_jpeg(path: Path, side: int = THUMBNAIL_SIDE) -> bytes:
    """The photo upright, its longest side at most `side`, as JPEG bytes."""
    from PIL import Image

    image = Image.fromarray(load_upright(path, side))
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


class Pictures:
    """Thumbnails (made when asked) and heat maps (made in the background), by content."""

    def __init__(self, tf_files: Path, engine: str | None) -> None:
        self.tf_files, self.engine = Path(tf_files), engine
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="tensorguess-heat")
        self.thumbnails: OrderedDict[str, bytes] = OrderedDict()
        self.heat_maps: OrderedDict[tuple[str, int], Future] = OrderedDict()
        self.model_version = 0
        self._explained: tuple[int, object, object] | None = None  # version, classifier, explainer
        self._lock = threading.Lock()

    def thumbnail(self, path: Path, digest: str) -> bytes:
        """The thumbnail of the photo at `path` whose content is `digest`."""
        with self._lock:
            if digest in self.thumbnails:
                self.thumbnails.move_to_end(digest)
                return self.thumbnails[digest]
        made = thumbnail_jpeg(path)
        with self._lock:
            self.thumbnails[digest] = made
            while len(self.thumbnails) > KEPT:
                self.thumbnails.popitem(last=False)
        return made

    def heat_map(self, path: Path, digest: str) -> bytes | None:
        """The heat map's JPEG, or None while it is being made (asking starts it);
        `NoHeatMap` when there can be none."""
        key = (digest, self.model_version)
        with self._lock:
            future = self.heat_maps.get(key)
            if future is None:
                future = self.heat_maps[key] = self.worker.submit(self._make, path, key[1])
                while len(self.heat_maps) > KEPT:
                    self.heat_maps.popitem(last=False)
        if not future.done():
            return None
        return future.result()

    def _make(self, path: Path, version: int) -> bytes:
        from tensorguess.classify.loading import load_classifier
        from tensorguess.quality.explain import explain, explainer_for, heat_overlay_jpeg

        try:
            if self._explained is None or self._explained[0] != version:
                classifier = load_classifier(self.tf_files, engine=self.engine)
                self._explained = (version, classifier, explainer_for(classifier))
            _, classifier, explainer = self._explained
            (prediction,) = classifier.classify([path])
            if prediction.scores is None:
                raise NoHeatMap(prediction.problem)
            (heat,) = explain(explainer, classifier.labels, [(path, prediction.scores)])
            return heat_overlay_jpeg(path, heat, HEAT_SIDE)
        except (TensorguessError, UnreadableImage) as problem:
            raise NoHeatMap(str(problem)) from None

    def model_changed(self) -> None:
        """A new model was trained: heat maps are made again with it."""
        with self._lock:
            self.model_version += 1
            self.heat_maps.clear()

    def close(self) -> None:
        """Stop the heat maps' thread (what it is making is finished)."""
        self.worker.shutdown(wait=False, cancel_futures=True)
