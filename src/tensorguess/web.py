"""What the HTTP faces (`serve`, `review`) share: the listening socket, taken before anything
is printed, and the answers every refusal gets, `{"error": "<one line>"}` with its status.

A failure of the server itself is a 500 that says only that: what went wrong (paths,
versions, the model's insides) is none of the client's business. Starlette raises the
error on after this answer, and uvicorn writes it to the server's log with its traceback.
"""

from __future__ import annotations

import errno
import json
import socket

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from tensorguess.errors import TensorguessError

INTERNAL_ERROR = "internal error; the server's log has the details"
BACKLOG = 2048  # uvicorn's own


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on `host`:`port` (port 0: a free one), or one line saying why not."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise TensorguessError(f"--host {host}: not an address here ({error.strerror})") from None
    listener = socket.socket(family, kind, protocol)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            raise TensorguessError(
                f"port {port} of {host} is in use; choose another with --port (0 picks a free one)"
            ) from None
        raise TensorguessError(f"cannot listen on {host} port {port} ({error.strerror})") from None
    # Listening from now on: a client that connects as soon as the address is printed waits
    # in the queue until the server runs, rather than being refused.
    listener.listen(BACKLOG)
    return listener


def url_of(listener: socket.socket) -> str:
    """The address a browser opens to reach `listener`."""
    host, port = listener.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def one_line(text: object, limit: int = 300) -> str:
    """`text` on one line, cut to `limit` characters: what an `{"error": ...}` holds."""
    return " ".join(str(text).split())[:limit]


async def send_error(send, status: int, message: str, headers: dict[str, str] | None = None):
    """An `{"error": ...}` answer straight from ASGI, before any route runs."""
    body = json.dumps({"error": message}, separators=(",", ":")).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    raw_headers += [(key.encode(), value.encode()) for key, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


async def http_refusal(request: Request, error: HTTPException) -> JSONResponse:
    """Starlette's own refusals (no such route, method not allowed) as one line."""
    message = str(error.detail)
    if error.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path[:200]}; the API is at /docs"
    elif error.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path[:200]}"
    return JSONResponse({"error": one_line(message)}, error.status_code, error.headers)


async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    """A body or query FastAPI could not validate: 400 naming the first field wrong."""
    first = error.errors()[0]
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "")
        message = f"malformed JSON: {reason}"
    else:
        where = ".".join(str(part) for part in first.get("loc", ())[1:])  # after "query"
        message = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    return JSONResponse({"error": one_line(message)}, 400)


async def internal(request: Request, error: Exception) -> JSONResponse:
    """A failure of the server itself: a 500 that says only that."""
    return JSONResponse({"error": INTERNAL_ERROR}, 500)


# Each app adds its own refusals to these (Exception last: it catches what is left).
REFUSAL_HANDLERS = {
    HTTPException: http_refusal,
    RequestValidationError: invalid_request,
}
