"""Heat maps over HTTP (`/v1/guess?explain=1` and the page): where the served model found the
evidence for each photo's best label (quality/explain.py).

Explaining needs TensorFlow (seconds to import, once) and a pass of the network's gradients
(a fraction of a second a photo): it runs on a thread of its own, one photo at a time, off the
event loop, and a model's explainer is built the first time it is asked for and kept while that
model is served. It is off by default, so that labelling stays as fast as it was.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tensorguess.errors import TensorguessError
from tensorguess.quality.explain import ExplainedUpload, explain_upload, explainer_for
from tensorguess.serve.model import ServedModel

# The overlay's longest side, in pixels: enough for a card on the page.
OVERLAY_SIDE = 480


class Explaining:
    """Heat maps of uploaded photos, computed one at a time on a thread of their own."""

    def __init__(self) -> None:
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="tensorguess-explain")
        self._version: int | None = None
        self._explainer = None

    async def explain(
        self, model: ServedModel, data: bytes, scores: np.ndarray
    ) -> ExplainedUpload | str:
        """The heat map of one photo (its encoded bytes and scores), or why there is none."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.worker, self._explain, model, data, scores)

    def _explain(self, model: ServedModel, data: bytes, scores: np.ndarray):
        try:
            if self._version != model.version:
                self._explainer, self._version = explainer_for(model.classifier), model.version
            return explain_upload(self._explainer, model.labels, data, scores, OVERLAY_SIDE)
        except TensorguessError as problem:  # a model that cannot be explained: said per photo
            return str(problem)

    def close(self) -> None:
        """Stop the thread (what it is doing finishes; nothing new starts)."""
        self.worker.shutdown(wait=False, cancel_futures=True)
