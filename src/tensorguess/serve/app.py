"""The HTTP app: the routes (routes/), the refusals, and the work that runs beside them.

Every API route answers JSON; every refusal is `{"error": "<one line>"}` with a 4xx status
(400 unusable input, 401 API key, 404 unknown model, version or route, 408 too slow, 413
too large, 415 wrong content type, 503 busy), and nothing a client sends can end the
server. A failure of the server itself is a 500 that says only that: its traceback goes to
the server's log, never to the client. The event loop only routes: JSON parsing, base64 and
image decoding run on a thread per core, the network on its own thread (batching.py).
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from tensorguess import __version__, web
from tensorguess.serve.batching import Overloaded, TooManyImages
from tensorguess.serve.context import ServerContext, ServeSettings
from tensorguess.serve.guard import Guard
from tensorguess.serve.model import LiveModel
from tensorguess.serve.payloads import BadRequest
from tensorguess.serve.routes import guess, page, tf_serving


def create_app(settings: ServeSettings, live: LiveModel) -> FastAPI:
    """The ASGI app serving `live`'s model under `settings.name`."""
    context = ServerContext(settings, live)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = context.batcher
        tasks = [asyncio.create_task(batcher.run()), asyncio.create_task(live.watch())]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        batcher.close()
        context.decoders.shutdown(wait=True, cancel_futures=True)
        context.explaining.close()
        images, calls = batcher.images_scored, batcher.batches_run
        live.say(
            f"tensorguess serve: stopped; {images} image{'s' * (images != 1)} labelled in "
            f"{calls} network call{'s' * (calls != 1)}"
        )

    app = FastAPIOffline(
        title="tensorguess serve",
        version=__version__,
        description=(
            "The classifier train.sh wrote, over HTTP: TensorFlow Serving's REST API, "
            "`/v1/guess` (the JSON of `guess --json`) and a page at `/`."
        ),
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.context = context
    app.add_middleware(
        Guard,
        api_key=settings.api_key,
        max_requests=settings.max_queue,
        max_upload_mb=settings.max_upload_mb,
        upload_budget_mb=settings.upload_budget_mb,
        read_timeout=settings.read_timeout,
    )
    for refusal, handler in REFUSAL_HANDLERS.items():
        app.add_exception_handler(refusal, handler)
    for routes in (page, tf_serving, guess):
        app.include_router(routes.router)
    return app


# Refusals, all as {"error": ...} -------------------------------------------------------------


async def bad_request(request: Request, error: BadRequest) -> JSONResponse:
    return JSONResponse({"error": web.one_line(error)}, 400)


async def overloaded(request: Request, error: Overloaded) -> JSONResponse:
    return JSONResponse({"error": str(error)}, 503, {"retry-after": "1"})


async def too_many(request: Request, error: TooManyImages) -> JSONResponse:
    return JSONResponse({"error": str(error)}, 413)


REFUSAL_HANDLERS = {
    **web.REFUSAL_HANDLERS,
    BadRequest: bad_request,
    Overloaded: overloaded,
    TooManyImages: too_many,
    Exception: web.internal,
}
