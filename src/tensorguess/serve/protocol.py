"""The HTTP connection: uvicorn's httptools protocol, with the limits on a request's head that
uvicorn lacks.

uvicorn closes a keep-alive connection idle for 5 s, but nothing bounds a connection that
never finishes its head: one opened and left silent, or one sending its headers a byte at a
time, is held forever, and httptools takes a head of any size. Here a head (request line
and headers) must be complete within `head_timeout` seconds of its first byte (or of the
connection's opening) and within `MAX_HEAD_BYTES`; past the time the connection is closed,
past the size it gets 431 and is closed. A body refused before it was whole (guard.py) is
read and dropped by uvicorn so that its client sees the answer; its remainder and the next
head must then arrive within `head_timeout` too. Bodies themselves are timed by the guard.
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# h11's limit on an incomplete head is 16 KiB; httptools has none. Browsers send 1-2 KiB.
MAX_HEAD_BYTES = 64 * 1024


class TimedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline and a size limit on each request's head."""

    head_timeout: float = 20.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._reading_head = True
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            self._reading_head
            and self._head_bytes > MAX_HEAD_BYTES
            and not self.transport.is_closing()
        ):
            self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True
        self._arm()

    def on_headers_complete(self) -> None:
        self._reading_head, self._head_bytes = False, 0
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Answered before its body was whole: the rest of it, then the next head, in time.
        if self.cycle is not None and self.cycle.more_body and not self.transport.is_closing():
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.head_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def _refuse_head(self) -> None:
        message = {"error": f"the request's head is over {MAX_HEAD_BYTES // 1024} KiB"}
        body = json.dumps(message, separators=(",", ":")).encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()


def timed_protocol(head_timeout: float) -> type[TimedHttpToolsProtocol]:
    """The protocol class uvicorn builds each connection with, for this `head_timeout`."""
    return type("TimedHttpToolsProtocol", (TimedHttpToolsProtocol,), {"head_timeout": head_timeout})
