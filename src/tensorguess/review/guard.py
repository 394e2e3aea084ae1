"""The door of the review's server: it moves the user's files, so before any route runs
it answers `{"error": ...}` itself to

- a Host header naming another machine while it listens on loopback (421): a web page
  whose name was made to point at 127.0.0.1 (DNS rebinding) must not reach it;
- a request under `/api/` without the API key, when there is one (401);
- a request under `/api/` with a body that is not JSON (415): a form on another site can
  post plain text to 127.0.0.1 without asking, but not JSON;
- a body over `MAX_BODY` (413), or one that has not come whole within `READ_TIMEOUT` (408).

The page's HTML, the OpenAPI page and /healthz hold no data and need no key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac

from tensorguess.web import send_error

MAX_BODY = 64 * 1024  # an action is a few hundred bytes
READ_TIMEOUT = 20.0
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
_HEADERS = {401: {"www-authenticate": "Bearer"}}


class ReviewGuard:
    """ASGI middleware: Host (on loopback), API key, JSON bodies, and their size and time."""

    def __init__(self, app, api_key: str | None, loopback: bool) -> None:
        self.app, self.loopback = app, loopback
        self.key = hashlib.sha256(api_key.encode()).digest() if api_key else None

    def _refusal(self, scope) -> tuple[int, str] | None:
        headers = dict(scope["headers"])
        if self.loopback:
            host = headers.get(b"host", b"").decode("latin-1")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name.strip("[]").lower() not in LOOPBACK_NAMES:
                return 421, f"this review answers to 127.0.0.1 and localhost only, not {host!r}"
        if not scope["path"].startswith("/api/"):
            return None
        if self.key is not None:
            scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
            given = hashlib.sha256(token.strip()).digest()
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given, self.key):
                return 401, "missing or wrong API key: send the header Authorization: Bearer <key>"
        if scope["method"] in ("POST", "PUT", "PATCH"):
            kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if headers.get(b"content-length", b"0") != b"0" and kind != b"application/json":
                return 415, "send the request's body as JSON (Content-Type: application/json)"
            length = headers.get(b"content-length", b"0")
            if not length.isdigit():
                return 400, "the Content-Length header is not a number"
            if int(length) > MAX_BODY:
                return 413, f"the request is over {MAX_BODY // 1024} KB"
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self._refusal(scope)
        if refusal is None and scope["method"] in ("POST", "PUT", "PATCH"):
            refusal, body = await self._body(receive)
            receive = _replay(body, receive)
        if refusal is not None:
            return await send_error(send, *refusal, _HEADERS.get(refusal[0]))
        return await self.app(scope, receive, send)

    @staticmethod
    async def _body(receive) -> tuple[tuple[int, str] | None, bytes]:
        """The whole body (bounded in size and time), or the refusal."""
        body = bytearray()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READ_TIMEOUT
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                return (408, f"the request's body did not come within {READ_TIMEOUT:g} s"), b""
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                return (413, f"the request is over {MAX_BODY // 1024} KB"), b""
            if not message.get("more_body", False):
                return None, bytes(body)


def _replay(body: bytes, receive):
    """A `receive` that gives the body read already, then the connection's own events."""
    given = False

    async def replayed():
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed
