"""The guard in front of every route. It checks the API key, then reads the request's body
whole, before any route runs, within three limits, and answers `{"error": ...}` itself past
any of them:

- the body's size: 413 past `--max_upload_mb`, before a byte is read when Content-Length
  says so, or as soon as a body sent without its length grows past it;
- the bytes every request's body holds in the server together (`--upload_budget_mb`): a
  body is charged what it has really sent, from its first byte until its answer is sent, so
  that a slow upload holds only the little it sent. A body whose declared length does not
  fit in what is left is refused before it is read, and one whose next piece does not fit
  while it is read: 503 with Retry-After;
- time: a body must keep coming at 500 bytes a second or more, counted over each span of
  `--read_timeout` seconds (10 KB in 20 s by default; Apache's mod_reqtimeout has the same
  minimum rate): a slow but honest upload goes on, while a byte a second, or a body that
  stops, gets 408. Counted over spans rather than since the start, so that a body sent fast
  up to its last bytes cannot bank hours of credit.

Then the number of requests at work (past their body, until answered) is bounded by
`--max_queue`: 503 past it. A request waiting for its body is not at work, so slow uploads
cannot take the places of others. The rest of a body refused before it is whole is read
and dropped by uvicorn, so that a client still sending sees its answer (closing at once
would reset the connection and lose it), for `--read_timeout` seconds at most
(protocol.py).

A route takes the body with `take_body(request)`, without a copy, and lets it go as soon as
it has what it needs from it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac

from starlette.requests import Request

from tensorguess.web import send_error

# Routes open without the API key: the health check, and the page's HTML, which holds no
# data (a browser cannot send a Bearer header with a page; the page asks for the key and
# sends it with each request it makes). Both take GET only, so they never read a body.
OPEN_PATHS = frozenset({"/healthz", "/"})
# The body read by the guard, kept in the request's scope until a route takes it.
BODY = "tensorguess.body"
# mod_reqtimeout's MinRate: the slowest a body may come, in bytes a second.
MIN_BYTES_PER_SECOND = 500
MB = 1024 * 1024


class Refused(Exception):
    """An answer the guard gives instead of the route's (`retry`: with Retry-After)."""

    def __init__(self, status: int, message: str, retry: bool = False):
        super().__init__(message)
        self.status = status
        self.headers = {"retry-after": "1"} if retry else {}


class ClientGone(Exception):
    """The client closed the connection before its body was complete: nobody to answer."""


def take_body(request: Request) -> bytearray:
    """The request's body as the guard read it, handed over: the caller holds the only reference."""
    return request.scope.pop(BODY, None) or bytearray()


class UploadBudget:
    """The bytes of request bodies the server holds (received, not yet answered), up to `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0

    def fits(self, size: int) -> bool:
        """Whether `size` more bytes would fit now."""
        return self.held + size <= self.limit

    def take(self, size: int) -> bool:
        """Charge `size` bytes if they fit; False (nothing charged) if they do not."""
        if not self.fits(size):
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        """Release `size` bytes charged before."""
        self.held -= size


class Guard:
    """The API key (compared in constant time), the body (size, budget, time), and the number
    of requests at work at once."""

    def __init__(
        self,
        app,
        api_key: str | None,
        max_requests: int,
        max_upload_mb: float,
        upload_budget_mb: float,
        read_timeout: float,
    ):
        self.app, self.max_requests, self.requests_in = app, max_requests, 0
        self.key_digest = hashlib.sha256(api_key.encode()).digest() if api_key else None
        self.max_upload_mb, self.max_body = max_upload_mb, int(max_upload_mb * MB)
        self.budget = UploadBudget(int(upload_budget_mb * MB))
        self.read_timeout = read_timeout

    def _authorised(self, scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    # Digests of equal length: the comparison's time says nothing of the key.
                    digest = hashlib.sha256(token.strip()).digest()
                    return hmac.compare_digest(digest, self.key_digest)
        return False

    def _busy(self, what: str) -> Refused:
        return Refused(503, f"the server is busy ({what}); retry shortly", retry=True)

    def _check_declared_length(self, scope) -> None:
        """Refuse a body whose Content-Length says it is too large, or cannot fit now."""
        length = dict(scope["headers"]).get(b"content-length")
        if length is None:
            return
        if not length.isdigit():
            raise Refused(400, "the Content-Length header is not a number")
        declared = int(length)
        if declared > self.max_body:
            raise Refused(413, self._too_large())
        if not self.budget.fits(declared):
            raise self._busy(self._uploads_held())

    def _too_large(self) -> str:
        return f"the request is over the size limit of {self.max_upload_mb:g} MB"

    def _uploads_held(self) -> str:
        return (
            f"{self.budget.held / MB:.0f} MB of uploads in progress, at most "
            f"{self.budget.limit / MB:.0f} MB"
        )

    async def _read_body(self, receive) -> bytearray:
        """The whole body, charged to the budget as it arrives; refused, it is given back."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        body = bytearray()
        # What each span of read_timeout seconds must bring, and the span now running.
        quota = MIN_BYTES_PER_SECOND * self.read_timeout
        span_start, span_bytes = start, 0
        try:
            while True:
                left = span_start + self.read_timeout - loop.time()
                try:
                    message = await asyncio.wait_for(receive(), max(left, 0))
                except asyncio.TimeoutError:
                    raise Refused(
                        408,
                        f"the request's body came too slowly ({len(body)} bytes in "
                        f"{loop.time() - start:.0f} s; it must come at "
                        f"{MIN_BYTES_PER_SECOND} bytes a second or more)",
                    ) from None
                if message["type"] == "http.disconnect":
                    raise ClientGone
                piece = message.get("body", b"")
                if len(body) + len(piece) > self.max_body:
                    raise Refused(413, self._too_large())
                if not self.budget.take(len(piece)):
                    raise self._busy(self._uploads_held())
                body += piece
                if not message.get("more_body", False):
                    return body
                span_bytes += len(piece)
                if span_bytes >= quota:
                    span_start, span_bytes = loop.time(), 0
        except BaseException:
            self.budget.give_back(len(body))
            raise

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
        try:
            self._check_declared_length(scope)
            body = await self._read_body(receive)
            if self.requests_in >= self.max_requests:
                self.budget.give_back(len(body))
                raise self._busy(f"{self.requests_in} requests in progress")
        except Refused as refusal:
            return await send_error(send, refusal.status, str(refusal), refusal.headers)
        except ClientGone:
            return None
        size = len(body)
        scope[BODY] = body
        del body  # the route takes the only reference, and lets it go once done with it
        self.requests_in += 1
        try:
            await self.app(scope, _after_body(scope, receive), send)
        finally:
            self.requests_in -= 1
            self.budget.give_back(size)


def _after_body(scope, receive):
    """The app's `receive`: the body once (if no route took it), then the connection's events."""
    delivered = False

    async def receive_after_body():
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": bytes(scope.pop(BODY, b"")), "more_body": False}

    return receive_after_body
