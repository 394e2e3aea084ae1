"""Start the server: load the model, take the port, run uvicorn until Ctrl-C or SIGTERM.

The port is taken and the model loaded before anything is printed, so a port in use or a
missing model is one line and exit 1; once the address is printed, the server answers.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Callable

import uvicorn

from tensorguess.errors import TensorguessError
from tensorguess.serve.app import create_app
from tensorguess.serve.context import ServeSettings
from tensorguess.serve.model import LiveModel, first_model


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to `host`:`port` (port 0: a free one), or one line saying why not."""
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
    return listener


def _url(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(settings: ServeSettings, say: Callable[[str], None]) -> None:
    """Serve `settings.tf_files` until stopped."""
    listener = listening_socket(settings.host, settings.port)
    try:
        model = first_model(settings.tf_files, settings.engine)
    except BaseException:
        listener.close()
        raise
    live = LiveModel(settings.tf_files, settings.engine, model, say)
    app = create_app(settings, live)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=settings.access_log,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    url = _url(listener)
    say(
        f"Serving {settings.tf_files} as model {settings.name!r} (labels: "
        f"{', '.join(model.labels)}; {model.classifier.engine}, {model.classifier.precision}) "
        f"on {url}"
    )
    say(f"  page {url}  API {url}v1/models/{settings.name}  docs {url}docs  (Ctrl-C stops)")
    loopback = ipaddress.ip_address(listener.getsockname()[0].split("%")[0]).is_loopback
    if not loopback and not settings.api_key:
        say(
            "tensorguess serve: warning: anyone who can reach this address can use the model; "
            "set an API key with TENSORGUESS_API_KEY (or --api_key)"
        )
    if loopback and os.path.exists("/.dockerenv"):
        say(
            "tensorguess serve: this looks like a container: to answer docker run -p, listen "
            "on all its addresses with --host 0.0.0.0"
        )
    uvicorn.Server(config).run(sockets=[listener])
