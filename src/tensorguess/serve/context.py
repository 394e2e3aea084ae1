"""What every route of the server shares: its settings, the live model, and how uploads become
predictions (decoded on a thread per core, scored in batches shared with other requests).

`create_app` makes one `ServerContext` and keeps it in `app.state`; a route asks for it with
a parameter `context: Context`.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypeVar

import numpy as np
from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from tensorguess.classify.prediction import Prediction
from tensorguess.data.images import UnreadableImage, load_pixels_from_bytes
from tensorguess.serve.batching import Batcher
from tensorguess.serve.explaining import Explaining
from tensorguess.serve.guard import take_body
from tensorguess.serve.model import LiveModel, ServedModel
from tensorguess.serve.payloads import BadRequest, Upload


@dataclass(frozen=True)
class ServeSettings:
    """What `tensorguess serve` was asked for (validated by its command line)."""

    tf_files: Path
    host: str = "127.0.0.1"
    port: int = 8501
    name: str = "model"
    api_key: str | None = None
    max_upload_mb: float = 20.0
    upload_budget_mb: float = 256.0
    read_timeout: float = 20.0
    min_score: float = 0.0
    engine: str | None = None
    max_batch: int = 32
    batch_wait_ms: float = 5.0
    max_queue: int = 256
    access_log: bool = False


class ServerContext:
    """The settings, the live model, the batcher and the decoding threads of one server."""

    def __init__(self, settings: ServeSettings, live: LiveModel) -> None:
        self.settings = settings
        self.live = live
        self.batcher = Batcher(
            settings.max_batch, settings.batch_wait_ms / 1000, settings.max_queue
        )
        self.decoders = ThreadPoolExecutor(
            os.cpu_count() or 1, thread_name_prefix="tensorguess-decode"
        )
        self.explaining = Explaining()

    def served(self, name: str, version: str | None = None) -> ServedModel:
        """The model now served, if it is the one the path names."""
        settings = self.settings
        if name != settings.name:
            raise HTTPException(
                404, f"no model named {name[:100]!r}; this server serves {settings.name!r}"
            )
        model = self.live.current
        if version is not None and version != str(model.version):
            raise HTTPException(
                404, f"model {name!r} has no version {version[:40]!r}; it serves {model.version}"
            )
        return model

    async def predictions(self, model: ServedModel, uploads: list[Upload]) -> list[Prediction]:
        """Decode (on the decoding threads) and score (batched) each upload, in order."""
        loop = asyncio.get_running_loop()
        size = model.classifier.image_size
        with self.batcher.admitted(len(uploads)) as ticket:
            decoded = await asyncio.gather(
                *(loop.run_in_executor(self.decoders, _decode, upload, size) for upload in uploads)
            )
            readable = [
                index for index, pixels in enumerate(decoded) if not isinstance(pixels, str)
            ]
            scored = await self.batcher.predict(
                ticket,
                model,
                [decoded[index] for index in readable],
                [uploads[i].name for i in readable],
            )
        answers = dict(zip(readable, scored, strict=True))
        return [
            answers[index] if index in answers else Prediction(Path(upload.name), None, problem)
            for index, (upload, problem) in enumerate(zip(uploads, decoded, strict=True))
        ]

    async def all_or_nothing(self, model: ServedModel, uploads: list[Upload]) -> list[Prediction]:
        """TF Serving's way: one unusable image fails the whole request."""
        results = await self.predictions(model, uploads)
        for result in results:
            if result.scores is None:
                raise BadRequest(f"{result.path}: {result.problem}")
        return results


def server_context(request: Request) -> ServerContext:
    """The `ServerContext` of the app answering `request`."""
    return request.app.state.context


# A route's parameter `context: Context` receives the server's `ServerContext`.
Context = Annotated[ServerContext, Depends(server_context)]


Body = TypeVar("Body", bound=BaseModel)


async def json_body(context: ServerContext, request: Request, model: type[Body]) -> Body:
    """The request's JSON body as `model`, whatever its Content-Type; `BadRequest` if not.
    Parsed on a decoding thread (a body may be megabytes), and let go once parsed."""
    body = take_body(request)
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(context.decoders, model.model_validate_json, body)
    except ValidationError as error:
        first = error.errors()[0]
        if first["type"] == "json_invalid":
            raise BadRequest(f"malformed JSON: {first['msg']}") from None
        where = ".".join(str(part) for part in first["loc"])
        raise BadRequest(f"{where or 'the body'}: {first['msg']}") from None


def _decode(upload: Upload, size: tuple[int, int]) -> np.ndarray | str:
    """The image's pixels, or the reason it has none (runs on a decoding thread)."""
    try:
        return load_pixels_from_bytes(upload.encoded(), size)
    except (UnreadableImage, BadRequest) as problem:
        return str(problem)
