"""TensorFlow Serving's REST API: status, metadata, `:predict` and `:classify`, each also under
`/versions/V`, answering as TF Serving does so that its clients work unchanged."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from tensorguess.serve.context import Context, ServerContext, json_body
from tensorguess.serve.model import ServedModel
from tensorguess.serve.payloads import (
    INPUT_NAME,
    check_signature,
    classify_images,
    predict_images,
)
from tensorguess.serve.schemas import (
    CLASSIFY_BODY,
    PREDICT_BODY,
    REFUSALS,
    ClassifyAnswer,
    ClassifyRequest,
    ModelStatusAnswer,
    PredictAnswer,
    PredictRequest,
)

router = APIRouter(tags=["TensorFlow Serving"], responses=REFUSALS)
# What answers a route: (the server, the model the path names, the request) -> the answer.
Respond = Callable[[ServerContext, ServedModel, Request], Awaitable[JSONResponse]]


def status(model: ServedModel) -> dict:
    """The model's status, as TF Serving's `GET /v1/models/NAME` gives it."""
    return {
        "model_version_status": [
            {
                "version": str(model.version),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


def metadata(model: ServedModel, name: str) -> dict:
    """The model's signature (and what tensorguess knows of it), as TF Serving's metadata."""
    size = model.classifier.image_size
    count = len(model.labels)

    def tensor(dtype: str, dims: list[int], tensor_name: str) -> dict:
        shape = {"dim": [{"size": str(dim), "name": ""} for dim in dims], "unknown_rank": False}
        return {"dtype": dtype, "tensor_shape": shape, "name": tensor_name}

    signature = {
        "inputs": {INPUT_NAME: tensor("DT_STRING", [-1], f"{INPUT_NAME}:0")},
        "outputs": {
            "scores": tensor("DT_FLOAT", [-1, count], "scores:0"),
            "classes": tensor("DT_STRING", [-1, count], "classes:0"),
            **(
                {"over_threshold": tensor("DT_BOOL", [-1, count], "over_threshold:0")}
                if model.classifier.task.multi_label
                else {}
            ),
        },
        "method_name": "tensorflow/serving/predict",
    }
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(model.version)},
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
                "task": model.classifier.task.name,
                "trained_at": model.metadata.get("trained_at"),
                "test_accuracy": model.metadata.get("test_accuracy"),
            },
        },
    }


async def predict(context: ServerContext, model: ServedModel, http: Request) -> JSONResponse:
    """`:predict`: scores of every instance (row format) or input (columnar format)."""
    request = await json_body(context, http, PredictRequest)
    check_signature(request.signature_name)
    uploads, columnar = predict_images(request.instances, request.inputs)
    results = await context.all_or_nothing(model, uploads)
    outputs = {"scores": [result.scores.tolist() for result in results]}
    outputs["classes"] = [model.labels] * len(results)
    if model.classifier.task.multi_label:  # as the exported serving model answers
        given = model.classifier.task.given(np.stack([result.scores for result in results]))
        outputs["over_threshold"] = given.tolist()
    if columnar:
        return JSONResponse({"outputs": outputs})
    rows = [dict(zip(outputs, row, strict=True)) for row in zip(*outputs.values(), strict=True)]
    return JSONResponse({"predictions": rows})


async def classify(context: ServerContext, model: ServedModel, http: Request) -> JSONResponse:
    """`:classify`: [label, score] pairs of every example."""
    request = await json_body(context, http, ClassifyRequest)
    check_signature(request.signature_name)
    results = await context.all_or_nothing(model, classify_images(request.examples))
    return JSONResponse(
        {
            "result": [
                list(zip(model.labels, result.scores.tolist(), strict=True)) for result in results
            ]
        }
    )


def add_model_routes(
    method: str, suffix: str, operation: str, respond: Respond, **options
) -> None:
    """`respond` at `/v1/models/NAME<suffix>` (the route `model_<operation>`) and at
    `/v1/models/NAME/versions/V<suffix>` (`model_version_<operation>`), as TF Serving
    answers both."""

    async def latest(name: str, request: Request, context: Context):
        return await respond(context, context.served(name), request)

    async def versioned(name: str, version: str, request: Request, context: Context):
        return await respond(context, context.served(name, version), request)

    router.add_api_route(
        f"/v1/models/{{name}}{suffix}",
        latest,
        methods=[method],
        name=f"model_{operation}",
        **options,
    )
    router.add_api_route(
        f"/v1/models/{{name}}/versions/{{version}}{suffix}",
        versioned,
        methods=[method],
        name=f"model_version_{operation}",
        **options,
    )


async def answer_status(context: ServerContext, model: ServedModel, http: Request):
    return JSONResponse(status(model))


async def answer_metadata(context: ServerContext, model: ServedModel, http: Request):
    return JSONResponse(metadata(model, context.settings.name))


add_model_routes(
    "GET", "", "status", answer_status, response_model=ModelStatusAnswer, summary="status"
)
add_model_routes(
    "GET", "/metadata", "metadata", answer_metadata, summary="signature, labels, engine"
)
add_model_routes(
    "POST",
    ":predict",
    "predict",
    predict,
    response_model=PredictAnswer,
    openapi_extra=PREDICT_BODY,
    summary='scores of images: {"instances": [{"b64": ...}]} or {"inputs": ...}',
)
add_model_routes(
    "POST",
    ":classify",
    "classify",
    classify,
    response_model=ClassifyAnswer,
    openapi_extra=CLASSIFY_BODY,
    summary="[label, score] pairs of examples",
)
