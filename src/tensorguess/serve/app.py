"""The HTTP app: TF Serving's REST API, `/v1/guess`, the page, `/healthz` and the API docs.

Every API route answers JSON; every refusal is `{"error": "<one line>"}` with a 4xx status
(400 unusable input, 401 API key, 404 unknown model, version or route, 413 too large,
415 wrong content type, 503 busy), and nothing a client sends can end the server. The
event loop only parses and routes: base64 and image decoding run on a thread per core,
the network on its own thread (batching.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TypeVar

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from tensorguess import __version__
from tensorguess.images import UnreadableImage, load_pixels_from_bytes
from tensorguess.predict import Prediction
from tensorguess.serve.batching import Batcher, Overloaded, TooManyImages
from tensorguess.serve.guard import Guard
from tensorguess.serve.model import LiveModel, ServedModel
from tensorguess.serve.payloads import (
    INPUT_NAME,
    BadRequest,
    Upload,
    check_signature,
    classify_images,
    multipart_files,
    predict_images,
)
from tensorguess.serve.schemas import (
    CLASSIFY_BODY,
    MULTIPART_BODY,
    PREDICT_BODY,
    REFUSALS,
    ClassifyAnswer,
    ClassifyRequest,
    ErrorAnswer,
    GuessAnswer,
    ModelStatusAnswer,
    PredictAnswer,
    PredictRequest,
)

PAGE_SECURITY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src blob: data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class ServeSettings:
    """What `tensorguess serve` was asked for (validated by its command line)."""

    tf_files: Path
    host: str = "127.0.0.1"
    port: int = 8501
    name: str = "model"
    api_key: str | None = None
    max_upload_mb: float = 20.0
    min_score: float = 0.0
    engine: str | None = None
    max_batch: int = 32
    batch_wait_ms: float = 5.0
    max_queue: int = 256
    access_log: bool = False


Body = TypeVar("Body", bound=BaseModel)


async def json_body(request: Request, model: type[Body]) -> Body:
    """The request's JSON body as `model`, whatever its Content-Type; `BadRequest` if not."""
    body = await request.body()
    try:
        return model.model_validate_json(body)
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


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


def create_app(settings: ServeSettings, live: LiveModel) -> FastAPI:
    """The ASGI app serving `live`'s model under `settings.name`."""
    batcher = Batcher(settings.max_batch, settings.batch_wait_ms / 1000, settings.max_queue)
    decoders = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="tensorguess-decode")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        tasks = [asyncio.create_task(batcher.run()), asyncio.create_task(live.watch())]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        batcher.close()
        decoders.shutdown(wait=True, cancel_futures=True)
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
    app.add_middleware(
        Guard,
        api_key=settings.api_key,
        max_requests=settings.max_queue,
        max_upload_mb=settings.max_upload_mb,
    )

    # Refusals, all as {"error": ...} ----------------------------------------------------

    @app.exception_handler(HTTPException)
    async def http_refusal(request: Request, error: HTTPException):
        message = str(error.detail)
        if error.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path[:200]}; the API is at /docs"
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path[:200]}"
        return JSONResponse({"error": _one_line(message)}, error.status_code, error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        first = error.errors()[0]
        if first.get("type") == "json_invalid":
            reason = (first.get("ctx") or {}).get("error", "")
            message = f"malformed JSON: {reason}"
        else:
            where = ".".join(str(part) for part in first.get("loc", ())[1:])  # after "query"
            message = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
        return JSONResponse({"error": _one_line(message)}, 400)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, error: BadRequest):
        return JSONResponse({"error": _one_line(str(error))}, 400)

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, error: Overloaded):
        return JSONResponse({"error": str(error)}, 503, {"retry-after": "1"})

    @app.exception_handler(TooManyImages)
    async def too_many(request: Request, error: TooManyImages):
        return JSONResponse({"error": str(error)}, 413)

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception):
        # Not a client's fault; the traceback goes to the server's log.
        message = f"internal error: {type(error).__name__}: {_one_line(str(error), 200)}"
        return JSONResponse({"error": message}, 500)

    # Shared steps -------------------------------------------------------------------------

    def served(name: str, version: str | None = None) -> ServedModel:
        """The model now served, if it is the one the path names."""
        if name != settings.name:
            raise HTTPException(
                404, f"no model named {name[:100]!r}; this server serves {settings.name!r}"
            )
        model = live.current
        if version is not None and version != str(model.version):
            raise HTTPException(
                404, f"model {name!r} has no version {version[:40]!r}; it serves {model.version}"
            )
        return model

    async def predictions(model: ServedModel, uploads: list[Upload]) -> list[Prediction]:
        """Decode (on the decoding threads) and score (batched) each upload, in order."""
        loop = asyncio.get_running_loop()
        size = model.classifier.image_size
        with batcher.admitted(len(uploads)) as ticket:
            decoded = await asyncio.gather(
                *(loop.run_in_executor(decoders, _decode, upload, size) for upload in uploads)
            )
            readable = [
                index for index, pixels in enumerate(decoded) if not isinstance(pixels, str)
            ]
            scored = await batcher.predict(
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

    async def all_or_nothing(model: ServedModel, uploads: list[Upload]) -> list[Prediction]:
        """TF Serving's way: one unusable image fails the whole request."""
        results = await predictions(model, uploads)
        for result in results:
            if result.scores is None:
                raise BadRequest(f"{result.path}: {result.problem}")
        return results

    def status(model: ServedModel) -> dict:
        return {
            "model_version_status": [
                {
                    "version": str(model.version),
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        }

    def metadata(model: ServedModel) -> dict:
        size = model.classifier.image_size
        count = len(model.labels)

        def tensor(dtype: str, dims: list[int], name: str) -> dict:
            shape = {"dim": [{"size": str(dim), "name": ""} for dim in dims], "unknown_rank": False}
            return {"dtype": dtype, "tensor_shape": shape, "name": name}

        signature = {
            "inputs": {INPUT_NAME: tensor("DT_STRING", [-1], f"{INPUT_NAME}:0")},
            "outputs": {
                "scores": tensor("DT_FLOAT", [-1, count], "scores:0"),
                "classes": tensor("DT_STRING", [-1, count], "classes:0"),
            },
            "method_name": "tensorflow/serving/predict",
        }
        return {
            "model_spec": {
                "name": settings.name,
                "signature_name": "",
                "version": str(model.version),
            },
            "metadata": {
                "signature_def": {
                    "signature_def": {"serving_default": signature},
                    "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
                },
                "tensorguess": {
                    "labels": model.labels,
                    "image_size": list(size),
                    "engine": model.classifier.engine,
                    "precision": model.classifier.precision,
                    "trained_at": model.metadata.get("trained_at"),
                    "test_accuracy": model.metadata.get("test_accuracy"),
                },
            },
        }

    async def predict(model: ServedModel, http: Request) -> JSONResponse:
        request = await json_body(http, PredictRequest)
        check_signature(request.signature_name)
        uploads, columnar = predict_images(request.instances, request.inputs)
        results = await all_or_nothing(model, uploads)
        scores = [result.scores.tolist() for result in results]
        if columnar:
            classes = [model.labels] * len(results)
            return JSONResponse({"outputs": {"scores": scores, "classes": classes}})
        return JSONResponse(
            {"predictions": [{"scores": row, "classes": model.labels} for row in scores]}
        )

    async def classify(model: ServedModel, http: Request) -> JSONResponse:
        request = await json_body(http, ClassifyRequest)
        check_signature(request.signature_name)
        results = await all_or_nothing(model, classify_images(request.examples))
        return JSONResponse(
            {
                "result": [
                    list(zip(model.labels, result.scores.tolist(), strict=True))
                    for result in results
                ]
            }
        )

    # Routes -------------------------------------------------------------------------------

    @app.get("/healthz", tags=["server"], summary="liveness (no API key needed)")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html, headers={"content-security-policy": PAGE_SECURITY})

    tf_serving = {"tags": ["TensorFlow Serving"], "responses": REFUSALS}

    status_route = {**tf_serving, "response_model": ModelStatusAnswer, "summary": "status"}

    @app.get("/v1/models/{name}", **status_route)
    async def model_status(name: str):
        return JSONResponse(status(served(name)))

    @app.get("/v1/models/{name}/versions/{version}", **status_route)
    async def model_version_status(name: str, version: str):
        return JSONResponse(status(served(name, version)))

    metadata_route = {**tf_serving, "summary": "signature, labels, engine"}

    @app.get("/v1/models/{name}/metadata", **metadata_route)
    async def model_metadata(name: str):
        return JSONResponse(metadata(served(name)))

    @app.get("/v1/models/{name}/versions/{version}/metadata", **metadata_route)
    async def model_version_metadata(name: str, version: str):
        return JSONResponse(metadata(served(name, version)))

    predicting = {
        **tf_serving,
        "response_model": PredictAnswer,
        "openapi_extra": PREDICT_BODY,
        "summary": 'scores of images: {"instances": [{"b64": ...}]} or {"inputs": ...}',
    }

    @app.post("/v1/models/{name}:predict", **predicting)
    async def model_predict(name: str, request: Request):
        return await predict(served(name), request)

    @app.post("/v1/models/{name}/versions/{version}:predict", **predicting)
    async def model_version_predict(name: str, version: str, request: Request):
        return await predict(served(name, version), request)

    classifying = {
        **tf_serving,
        "response_model": ClassifyAnswer,
        "openapi_extra": CLASSIFY_BODY,
        "summary": "[label, score] pairs of examples",
    }

    @app.post("/v1/models/{name}:classify", **classifying)
    async def model_classify(name: str, request: Request):
        return await classify(served(name), request)

    @app.post("/v1/models/{name}/versions/{version}:classify", **classifying)
    async def model_version_classify(name: str, version: str, request: Request):
        return await classify(served(name, version), request)

    @app.post(
        "/v1/guess",
        response_model=list[GuessAnswer],
        tags=["tensorguess"],
        summary="label photos (multipart files, or one image as the body)",
        description=(
            "Answers what `guess --json` prints: per photo, the labels best first, or why the "
            "photo could not be read. 400 only when no photo could be read."
        ),
        responses={**REFUSALS, 415: {"model": ErrorAnswer, "description": "not multipart"}},
        openapi_extra=MULTIPART_BODY,
    )
    async def guess(request: Request, top_k: int | None = Query(None, ge=1)):
        content_type = request.headers.get("content-type", "")
        kind = content_type.split(";")[0].strip().lower()
        if kind != "multipart/form-data" and not (
            kind.startswith("image/") or kind == "application/octet-stream"
        ):
            raise HTTPException(
                415,
                "send the photos as multipart/form-data files (curl -F files=@photo.jpg), "
                "or one photo as the body with Content-Type image/*",
            )
        model = live.current
        body = await request.body()
        if kind == "multipart/form-data":
            loop = asyncio.get_running_loop()
            uploads = await loop.run_in_executor(decoders, multipart_files, content_type, body)
        else:
            uploads = [Upload("image", body)]
        results = await predictions(model, uploads)
        if all(result.scores is None for result in results):
            first = results[0]
            more = f" (and {len(results) - 1} more)" if len(results) > 1 else ""
            raise BadRequest(f"{first.path}: {first.problem}{more}")
        return JSONResponse([result.to_json(model.labels, top_k) for result in results])

    page_html = _page(settings)
    return app


def _page(settings: ServeSettings) -> str:
    """The page, with what it needs to know about this server written into it."""
    config = json.dumps(
        {
            "name": settings.name,
            "min_score": settings.min_score,
            "needs_key": settings.api_key is not None,
        }
    )
    # Inside <script>, "</" and "<!--" must not appear; \u003c reads the same in JSON.
    config = config.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    page = resources.files("tensorguess.serve").joinpath("page.html").read_text(encoding="utf-8")
    return page.replace("/*CONFIG*/{}", config)
