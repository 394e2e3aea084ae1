"""`POST /v1/guess`: photos as multipart files (or one photo as the body) answered with what
`guess --json` prints."""

from __future__ import annotations

import asyncio
import base64

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from tensorguess.quality.explain import ExplainedUpload
from tensorguess.serve.context import Context
from tensorguess.serve.guard import take_body
from tensorguess.serve.payloads import BadRequest, Upload, multipart_files
from tensorguess.serve.schemas import MULTIPART_BODY, REFUSALS, ErrorAnswer, GuessAnswer

router = APIRouter()


@router.post(
    "/v1/guess",
    response_model=list[GuessAnswer],
    tags=["tensorguess"],
    summary="label photos (multipart files, or one image as the body)",
    description=(
        "Answers what `guess --json` prints: per photo, the labels best first, or why the "
        "photo could not be read. 400 only when no photo could be read. With `explain=1`, "
        "each labelled photo also gets its heat map (docs/explain.md): a few tenths of a "
        "second a photo, and seconds once while the server loads TensorFlow."
    ),
    responses={**REFUSALS, 415: {"model": ErrorAnswer, "description": "not multipart"}},
    openapi_extra=MULTIPART_BODY,
)
async def guess(
    request: Request,
    context: Context,
    top_k: int | None = Query(None, ge=1),
    explain: bool = Query(False, description="also where the evidence for the best label lies"),
):
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
    model = context.live.current
    body = take_body(request)
    if kind == "multipart/form-data":
        loop = asyncio.get_running_loop()
        uploads = await loop.run_in_executor(context.decoders, multipart_files, content_type, body)
    else:
        uploads = [Upload("image", body)]
    results = await context.predictions(model, uploads)
    if all(result.scores is None for result in results):
        first = results[0]
        more = f" (and {len(results) - 1} more)" if len(results) > 1 else ""
        raise BadRequest(f"{first.path}: {first.problem}{more}")
    answers = [result.to_json(model.labels, top_k) for result in results]
    if explain:
        for answer, result, upload in zip(answers, results, uploads, strict=True):
            if result.scores is not None:
                explained = await context.explaining.explain(
                    model, bytes(upload.encoded()), result.scores
                )
                answer.update(_heat_fields(explained))
    return JSONResponse(answers)


def _heat_fields(explained: ExplainedUpload | str) -> dict:
    """What `explain=1` adds to a photo's answer."""
    if isinstance(explained, str):
        return {"heatmap_error": explained}
    return {
        "heatmap": base64.b64encode(explained.map_png).decode("ascii"),
        "heatmap_overlay": base64.b64encode(explained.overlay_jpeg).decode("ascii"),
        "heatmap_label": explained.label,
    }
