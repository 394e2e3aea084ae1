"""Batching: images from concurrent requests go through the network together.

The network runs on one thread, one batch at a time, in the engine guess.sh uses
(OpenVINO computes a batch of 8 per request, two requests at once on 2 cores, so a batch
of 1 costs nearly what 16 do). While the network is busy, decoded images queue, and the
next batch takes every one waiting, up to `max_batch`. While it is idle, a batch starts as
soon as no admitted image is still being decoded, or when the oldest waiting image has
waited `max_wait` seconds: a lone request is not kept waiting, and images decoded a few
milliseconds apart share a call. Batches never mix models: after a switch to a new model,
the images taken with the old one still run on it.

Work is bounded: `admitted` lets at most `max_images` images into the server at once
(decoding, waiting or in the network); past that a request is refused at once with
`Overloaded` (503), and one request larger than the whole allowance with `TooManyImages`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from tensorguess.classify.prediction import Prediction
from tensorguess.serve.model import ServedModel


class Overloaded(Exception):
    """The server holds as many images as it may; the client should retry shortly."""


class TooManyImages(Exception):
    """One request holds more images than the server takes at once."""


@dataclass
class Ticket:
    """A request's places in the server: its images, and whether they reached `predict`."""

    count: int
    submitted: bool = False


@dataclass
class _Waiting:
    model: ServedModel
    pixels: np.ndarray
    name: str
    arrived: float
    answer: asyncio.Future


class Batcher:
    """Gathers decoded images into batches and runs the network on them, one at a time."""

    def __init__(self, max_batch: int = 32, max_wait: float = 0.005, max_images: int = 256):
        self.max_batch, self.max_wait, self.max_images = max_batch, max_wait, max_images
        self.images_in = 0
        self._decoding = 0  # admitted images not yet handed to `predict`
        self.images_scored = self.batches_run = 0
        self._waiting: deque[_Waiting] = deque()
        self._arrived = asyncio.Event()
        self._network = ThreadPoolExecutor(1, thread_name_prefix="tensorguess-network")

    @contextmanager
    def admitted(self, count: int) -> Iterator[Ticket]:
        """Hold `count` images' places for the duration of a request, or refuse it at once."""
        if count > self.max_images:
            raise TooManyImages(
                f"{count} images in one request; this server takes at most {self.max_images} "
                "at once (--max_queue): send them in smaller requests"
            )
        if self.images_in + count > self.max_images:
            raise Overloaded(
                f"the server is busy ({self.images_in} images in progress, at most "
                f"{self.max_images}); retry shortly"
            )
        ticket = Ticket(count)
        self.images_in += count
        self._decoding += count
        try:
            yield ticket
        finally:
            self.images_in -= count
            if not ticket.submitted:
                self._decoding -= count
                self._arrived.set()  # one image fewer to wait for

    async def predict(
        self, ticket: Ticket, model: ServedModel, pixels: list[np.ndarray], names: list[str]
    ) -> list[Prediction]:
        """The predictions of `model` for a request's decoded images (those of its `ticket`
        that could be decoded), computed with other requests' images."""
        ticket.submitted = True
        self._decoding -= ticket.count
        self._arrived.set()
        if not pixels:
            return []
        loop = asyncio.get_running_loop()
        answers = []
        for image, name in zip(pixels, names, strict=True):
            answer = loop.create_future()
            self._waiting.append(_Waiting(model, image, name, loop.time(), answer))
            answers.append(answer)
        return list(await asyncio.gather(*answers))

    async def run(self) -> None:
        """Run batches as images arrive, forever (cancel to stop)."""
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            # The short, bounded wait for images still being decoded.
            while len(self._waiting) < self.max_batch and self._decoding > 0:
                late = self._waiting[0].arrived + self.max_wait - loop.time()
                if late <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), late)
                except asyncio.TimeoutError:
                    break
            batch = self._take()
            if not batch:
                continue
            model = batch[0].model
            try:
                predictions = await loop.run_in_executor(
                    self._network,
                    model.classifier.predict_pixels,
                    np.stack([item.pixels for item in batch]),
                    [item.name for item in batch],
                )
            except Exception as error:  # noqa: BLE001  (each request answers for itself)
                for item in batch:
                    if not item.answer.done():
                        item.answer.set_exception(error)
            else:
                self.batches_run += 1
                self.images_scored += len(batch)
                for item, prediction in zip(batch, predictions, strict=True):
                    if not item.answer.done():
                        item.answer.set_result(prediction)

    def _take(self) -> list[_Waiting]:
        """Up to `max_batch` waiting images of the oldest one's model, in order."""
        batch: list[_Waiting] = []
        while self._waiting and len(batch) < self.max_batch:
            item = self._waiting[0]
            if batch and item.model is not batch[0].model:
                break
            self._waiting.popleft()
            if not item.answer.done():  # a request that was cancelled meanwhile
                batch.append(item)
        return batch

    def close(self) -> None:
        """Stop the network thread once its batch is done."""
        self._network.shutdown(wait=True, cancel_futures=True)
