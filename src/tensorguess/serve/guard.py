"""The guard in front of every route: the API key, the body's size, and how many requests
are in at once. It answers `{"error": ...}` itself, before any route runs."""

from __future__ import annotations

import hashlib
import hmac
import json

from starlette.exceptions import HTTPException

# Routes open without the API key: the health check, and the page's HTML, which holds no
# data (a browser cannot send a Bearer header with a page; the page asks for the key and
# sends it with each request it makes).
OPEN_PATHS = frozenset({"/healthz", "/"})


async def send_error(send, status: int, message: str, headers: dict[str, str] | None = None):
    """An `{"error": ...}` answer straight from ASGI, before any route runs."""
    body = json.dumps({"error": message}, separators=(",", ":")).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    raw_headers += [(key.encode(), value.encode()) for key, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(HTTPException):
    """The body grew past the limit while it was read (a body sent without its length)."""

    def __init__(self, limit_mb: float):
        super().__init__(413, f"the request is over the size limit of {limit_mb:g} MB")


class Guard:
    """The API key (compared in constant time), the body's size, and the number of requests
    in at once. A body declared too large is refused before it is read."""

    def __init__(self, app, api_key: str | None, max_requests: int, max_upload_mb: float):
        self.app, self.max_requests, self.requests_in = app, max_requests, 0
        self.key_digest = hashlib.sha256(api_key.encode()).digest() if api_key else None
        self.max_upload_mb = max_upload_mb
        self.max_body = int(max_upload_mb * 1024 * 1024)

    def _authorised(self, scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    # Digests of equal length: the comparison's time says nothing of the key.
                    digest = hashlib.sha256(token.strip()).digest()
                    return hmac.compare_digest(digest, self.key_digest)
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        if self.key_digest is not None and not self._authorised(scope):
            return await send_error(
                send,
                401,
                "missing or wrong API key: send the header Authorization: Bearer <key>",
                {"www-authenticate": "Bearer"},
            )
        if self.requests_in >= self.max_requests:
            return await send_error(
                send,
                503,
                f"the server is busy ({self.requests_in} requests in progress); retry shortly",
                {"retry-after": "1"},
            )
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit():
            return await send_error(send, 400, "the Content-Length header is not a number")
        if int(length) > self.max_body:
            return await send_error(send, 413, BodyTooLarge(self.max_upload_mb).detail)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise BodyTooLarge(self.max_upload_mb)
            return message

        self.requests_in += 1
        try:
            await self.app(scope, limited_receive, send)
        finally:
            self.requests_in -= 1
