"""The page at `/` (drop photos on it) and `/healthz` (liveness, no API key needed)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from tensorguess.serve.context import Context, ServeSettings

PAGE_SECURITY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src blob: data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'"
)

router = APIRouter()


@router.get("/healthz", tags=["server"], summary="liveness (no API key needed)")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/", include_in_schema=False)
async def page(context: Context) -> HTMLResponse:
    return HTMLResponse(
        page_html(context.settings), headers={"content-security-policy": PAGE_SECURITY}
    )


@lru_cache(maxsize=4)
def page_html(settings: ServeSettings) -> str:
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
