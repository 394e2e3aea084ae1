"""The review's HTTP app: the page at `/`, and the JSON API under `/api/` (OpenAPI at /docs).

Every refusal is `{"error": "<one line>"}` with its status: 400 a bad request (a label that
cannot be a folder's name, a sorted copy asked to leave training), 404 an unknown photo,
finding or action, 409 a conflict (the photo changed on disk or was acted on since it was
listed, a training running), 401/408/413/415/421 from the guard (guard.py). A failure of
the server itself is a 500 saying only that; its traceback goes to the server's log. The
routes that touch files or hash photos run on worker threads, never on the event loop.
"""

from __future__ import annotations

import json
from typing import Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field

from tensorguess import __version__, web
from tensorguess.data.images import UnreadableImage
from tensorguess.review.actions import Refused
from tensorguess.review.guard import ReviewGuard
from tensorguess.review.page import PAGE
from tensorguess.review.pictures import NoHeatMap
from tensorguess.review.session import Review

PAGE_SECURITY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src blob: data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'"
)


class ActionRequest(BaseModel):
    """One action on a photo (relabel, remove) or on a finding (keep)."""

    action: Literal["relabel", "remove", "keep"]
    sha256: str = Field(description="the photo's SHA-256 as the list gave it")
    photo: str | None = Field(None, description="relabel, remove: the photo's id in the list")
    item: str | None = Field(None, description="keep: the finding's id in the list")
    label: str | None = Field(None, description="relabel: the new label (a new one is made)")


class UndoRequest(BaseModel):
    """Which action to undo: by default the latest in effect."""

    action: int | None = None


class ActionDone(BaseModel):
    """An action as the journal holds it, once applied."""

    id: int
    action: str
    photo: str | None
    label: str | None = Field(None, description="the photo's label before the action")
    to_label: str | None = None
    undoes: int | None = Field(None, description="an undo: the action it took back")
    to: str | None = Field(None, description="where the photo is now, for a move or copy")


class Training(BaseModel):
    """The training started from the page."""

    status: Literal["idle", "running", "done", "failed"]
    preset: str
    progress: str
    lines: list[str]
    seconds: float | None
    old_test_accuracy: float | None
    new_test_accuracy: float | None


class PhotoShown(BaseModel):
    """A photo of a finding, named by its id (`data/<label>/<name>`, `sorted/<n>/<name>`)."""

    id: str
    name: str
    label: str = Field(description="its folder's label, or the model's for a sorted copy")
    sha256: str = Field(description="its content when listed: send it with an action")
    where: Literal["data", "sorted"]


class ActionTaken(BaseModel):
    """An action in effect on a finding's photo."""

    id: int
    action: str
    photo: str | None
    to_label: str | None
    undoes: int | None


class Finding(BaseModel):
    """One finding; the facts beside its photos depend on its kind."""

    model_config = ConfigDict(extra="allow")

    id: str
    kind: Literal["label_issue", "near_duplicate", "outlier", "sorted"]
    photos: list[PhotoShown]
    actions: list[ActionTaken]
    suggested: str | None = Field(None, description="label_issue: the label it more likely has")
    confidence: float | None = Field(None, description="label_issue: how likely")
    wrong: float | None = Field(None, description="label_issue: how likely its label is wrong")
    similarity: float | None = Field(None, description="near_duplicate")
    identical: bool | None = Field(None, description="near_duplicate: the same bytes")
    across_labels: bool | None = Field(None, description="near_duplicate: under two labels")
    straddles_train_and_test: bool | None = Field(
        None, description="near_duplicate: one in the test split, one in training"
    )
    novelty: float | None = Field(None, description="outlier: how far from every label")
    score: float | None = Field(None, description="sorted: the model's best score")
    unknown: bool | None = Field(None, description="sorted: named unknown- rather than unsure-")
    dest: str | None = Field(None, description="sorted: the DEST it is in")


class JournalEntry(BaseModel):
    """One action of the journal, with what became of it."""

    id: int
    at: str
    action: str
    photo: str | None
    label: str | None
    to_label: str | None
    undoes: int | None
    to: str | None = Field(description="where the photo went, once done")
    failed: str | None = Field(description="why nothing was changed, if so")
    undone_by: int | None


class Items(BaseModel):
    """The list: findings most useful first, with the actions taken on them."""

    labels: list[str]
    checking: bool = Field(description="the list is being made again")
    checked_at: float | None
    problem: str | None
    items: list[Finding]
    training: Training
    history: list[JournalEntry]


def create_app(review: Review, api_key: str | None, loopback: bool) -> FastAPI:
    """The ASGI app of `review`."""
    app = FastAPIOffline(
        title="tensorguess review",
        version=__version__,
        description="Look at the photos worth a look and correct the training data: "
        "relabel, remove, keep, undo, retrain (docs/review.md).",
        redoc_url=None,
    )
    app.add_middleware(ReviewGuard, api_key=api_key, loopback=loopback)
    for refusal, handler in REFUSAL_HANDLERS.items():
        app.add_exception_handler(refusal, handler)

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(
            page_html(review, api_key is not None),
            headers={"content-security-policy": PAGE_SECURITY},
        )

    @app.get("/healthz", tags=["server"], summary="liveness (no API key needed)")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/api/items", tags=["review"], summary="the findings, most useful first")
    def items() -> Items:
        return Items(
            **review.items(),
            training=Training(**review.training.state()),
            history=review.ledger.history(),
        )

    @app.post(
        "/api/items/refresh",
        tags=["review"],
        status_code=202,
        summary="make the list again (the features are cached: seconds)",
    )
    def refresh() -> dict:
        return {"checking": True, "started": review.check()}

    @app.post("/api/actions", tags=["review"], summary="relabel, remove or keep")
    def act(request: ActionRequest) -> ActionDone:
        if request.action == "keep":
            if not request.item:
                raise Refused(400, "keep needs the finding's id: item")
        elif not request.photo:
            raise Refused(400, f"{request.action} needs the photo's id: photo")
        if request.action == "relabel" and request.label is None:
            raise Refused(400, "relabel needs the new label: label")
        done = review.act(
            request.action, request.photo or "", request.sha256, request.label, request.item or ""
        )
        return ActionDone(**done)

    @app.get("/api/actions", tags=["review"], summary="the journal's latest actions")
    def history() -> list[JournalEntry]:
        return review.ledger.history()

    @app.post("/api/undo", tags=["review"], summary="undo the latest action, or the one named")
    def undo(request: UndoRequest) -> ActionDone:
        return ActionDone(**review.undo(request.action))

    @app.post(
        "/api/train",
        tags=["training"],
        status_code=202,
        summary="train again, as train.sh does, with the model's preset",
    )
    def train() -> Training:
        review.training.start()
        return Training(**review.training.state())

    @app.get("/api/train", tags=["training"], summary="how the training goes")
    def training() -> Training:
        return Training(**review.training.state())

    @app.get(
        "/api/photos/thumbnail",
        tags=["pictures"],
        summary="a listed photo, small (JPEG)",
        response_class=Response,
    )
    def thumbnail(photo: str = Query(description="the photo's id")) -> Response:
        listed = review.where_now(photo)
        try:
            data = review.pictures.thumbnail(listed.path, listed.sha256)
        except (UnreadableImage, OSError) as error:
            raise Refused(409, f"{photo}: cannot be read now ({error})") from None
        return Response(data, media_type="image/jpeg", headers={"cache-control": "no-store"})

    @app.get(
        "/api/photos/heat",
        tags=["pictures"],
        summary="where the model found its evidence in a listed photo (JPEG; 202 while made)",
        response_class=Response,
    )
    def heat(photo: str = Query(description="the photo's id")) -> Response:
        listed = review.where_now(photo)
        try:
            data = review.pictures.heat_map(listed.path, listed.sha256)
        except NoHeatMap as reason:
            raise Refused(409, f"no heat map for {photo}: {reason}") from None
        if data is None:
            return JSONResponse({"status": "making"}, 202)
        return Response(data, media_type="image/jpeg", headers={"cache-control": "no-store"})

    return app


def page_html(review: Review, needs_key: bool) -> str:
    """The page, with what it needs to know about this review written into it."""
    config = json.dumps(
        {
            "tf_files": str(review.tf_files),
            "sorted": [str(dest) for dest in review.dests],
            "needs_key": needs_key,
        }
    )
    # Inside <script>, "</" and "<!--" must not appear; \u003c reads the same in JSON.
    config = config.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return PAGE.replace("/*CONFIG*/{}", config)


# Refusals, all as {"error": ...} -------------------------------------------------------------


async def refused(request: Request, error: Refused) -> JSONResponse:
    return JSONResponse({"error": web.one_line(error)}, error.status)


REFUSAL_HANDLERS = {**web.REFUSAL_HANDLERS, Refused: refused, Exception: web.internal}
