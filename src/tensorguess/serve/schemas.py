"""The request and answer models of the API: what the OpenAPI page shows, and what the
routes check a request's JSON against."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorAnswer(BaseModel):
    error: str = Field(examples=["instance 1: not an image Pillow can read"])


class PredictRequest(BaseModel):
    """TF Serving's predict request: `instances` (rows) or `inputs` (columns) of images."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"instances": [{"b64": "<base64 of a JPEG>"}]}]}
    )
    signature_name: str | None = None
    instances: list[Any] | None = Field(
        None, description='[{"b64": "..."}, ...] or [{"images": {"b64": "..."}}, ...]'
    )
    inputs: Any = Field(None, description='[{"b64": "..."}, ...] or {"images": [...]}')


class ScoresAndClasses(BaseModel):
    scores: list[float] = Field(description="one score per class, in the model's label order")
    classes: list[str]
    over_threshold: list[bool] | None = Field(
        None, description="multi-label models: whether each class is at or over its threshold"
    )


class PredictAnswer(BaseModel):
    predictions: list[ScoresAndClasses] | None = Field(None, description="for instances")
    outputs: dict[str, list[list[float]] | list[list[str]] | list[list[bool]]] | None = Field(
        None, description="for inputs: {scores: [[...]], classes: [[...]]} (and over_threshold)"
    )


class ClassifyRequest(BaseModel):
    """TF Serving's classify request: examples with one image feature each."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"examples": [{"images": {"b64": "<base64>"}}]}]}
    )
    signature_name: str | None = None
    context: dict[str, Any] | None = None
    examples: list[dict[str, Any]]


class ClassifyAnswer(BaseModel):
    result: list[list[tuple[str, float]]] = Field(
        description="per example, [label, score] pairs in the model's label order"
    )


class LabelScore(BaseModel):
    label: str
    score: float


class GuessAnswer(BaseModel):
    """One image as `guess --json` prints it: labels best first, or why it has none; with
    `explain=1`, where the evidence for the best label lies (base64 images)."""

    image: str
    predictions: list[LabelScore] | None = None
    labels: list[str] | None = Field(
        None, description="multi-label models: the labels at or over their thresholds"
    )
    novelty: float | None = Field(None, description="models with novelty: how unlike training")
    unknown: bool | None = Field(None, description="models with novelty: over its threshold")
    error: str | None = None
    heatmap: str | None = Field(
        None, description="the bare map, greyscale PNG at the photo's size, base64"
    )
    heatmap_overlay: str | None = Field(
        None, description="the photo with the map over it, JPEG (480 px at most), base64"
    )
    heatmap_label: str | None = None
    heatmap_error: str | None = Field(None, description="why this photo has no heat map")


class VersionStatus(BaseModel):
    version: str
    state: str
    status: dict[str, str]


class ModelStatusAnswer(BaseModel):
    model_version_status: list[VersionStatus]


def _json_body(model: type[BaseModel]) -> dict:
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


# TF Serving's clients (and curl -d) send JSON under any Content-Type, so the routes parse
# the body themselves rather than let FastAPI insist on application/json; these describe it.
PREDICT_BODY = _json_body(PredictRequest)
CLASSIFY_BODY = _json_body(ClassifyRequest)
MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                    "required": ["files"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
REFUSALS = {
    status: {"model": ErrorAnswer, "description": text}
    for status, text in (
        (400, "an image or the request cannot be used"),
        (401, "the API key is missing or wrong"),
        (404, "no such model or version"),
        (408, "the body came slower than 500 bytes a second (--read_timeout)"),
        (413, "over --max_upload_mb, or more images than --max_queue"),
        (500, "the server failed; its log has the details"),
        (503, "busy (--max_queue, --upload_budget_mb): retry after Retry-After seconds"),
    )
}
