"""Start the review: replay the journal, take the port, make the list, serve until Ctrl-C.

The address is refused before anything else happens when it is beyond loopback and there
is no API key; the port is taken before the address is printed, so a port in use is one
line and exit 1; once the address is printed, the page answers (the list follows when
doctor's check is done).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tensorguess.errors import TensorguessError
from tensorguess.quiet import import_tensorflow_quietly
from tensorguess.web import listening_socket, url_of

DEFAULT_PORT = 8502  # beside tensorguess serve's 8501


@dataclass(frozen=True)
class ReviewSettings:
    """What `tensorguess review` was asked for."""

    tf_files: Path
    dests: Sequence[Path]
    host: str
    port: int
    api_key: str | None
    engine: str | None


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine's loopback only."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        return False
    return all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses)


def run_review(settings: ReviewSettings, say: Callable[[str], None]) -> None:
    """Serve the review of `settings.tf_files` until stopped."""
    import uvicorn

    from tensorguess.review.app import create_app
    from tensorguess.review.session import Review

    loopback = is_loopback(settings.host)
    if not loopback and not settings.api_key:
        raise TensorguessError(
            f"--host {settings.host}: refusing to listen beyond this machine without an API "
            "key, since the review moves your files; set TENSORGUESS_API_KEY (or --api_key)"
        )
    listener = listening_socket(settings.host, settings.port)
    try:
        review = Review(settings.tf_files, settings.dests, settings.engine, say)
    except BaseException:
        listener.close()
        raise
    try:
        # The list and the heat maps need TensorFlow, each on a thread of its own; imported
        # here first, its start-up notices are muted before the server has anything to say.
        import_tensorflow_quietly()
        review.check()
        app = create_app(review, settings.api_key, loopback)
        config = uvicorn.Config(
            app, log_level="warning", server_header=False, timeout_graceful_shutdown=5
        )
        url = url_of(listener)
        say(f"Reviewing {review.tf_files} on {url}  (API {url}docs; Ctrl-C stops)")
        uvicorn.Server(config).run(sockets=[listener])
    finally:
        review.close()
