"""Start the server: load the model, take the port, run uvicorn until Ctrl-C or SIGTERM.

The port is taken and the model loaded before anything is printed, so a port in use or a
missing model is one line and exit 1; once the address is printed, the server answers.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
from collections.abc import Callable

import uvicorn

from tensorguess.serve.app import create_app
from tensorguess.serve.context import ServeSettings
from tensorguess.serve.model import LiveModel, first_model
from tensorguess.serve.protocol import timed_protocol
from tensorguess.web import listening_socket, url_of

# Open files (connections among them) this process may hold, when the system allows it.
MAX_OPEN_FILES = 65536
# glibc's mallopt parameter (malloc.h).
M_MMAP_THRESHOLD = -3


def uvicorn_server(settings: ServeSettings, live: LiveModel) -> uvicorn.Server:
    """The uvicorn server of the app, with the limits on connections (protocol.py)."""
    # No limit_concurrency: slow clients could fill it and lock everyone else out, where the
    # guard and the protocol cut them off instead and bound what they hold.
    config = uvicorn.Config(
        create_app(settings, live),
        http=timed_protocol(settings.read_timeout),
        log_level="warning",
        access_log=settings.access_log,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    return uvicorn.Server(config)


def allow_more_connections() -> None:
    """Raise the limit on open files to the most the system allows this process (capped):
    each connection is one, and a soft limit of 1024 is soon reached by many slow clients."""
    try:
        import resource
    except ImportError:  # not on Windows, where there is no such limit to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, MAX_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def return_freed_uploads() -> None:
    """Have glibc hand every freed block of 128 KiB or more back to the system at once.

    By default it raises that threshold to the size of the largest block freed (up to 32
    MB), so after the first large upload, bodies of a few MB come from its heap, where what
    is freed stays in the process, scattered. Measured with bench/abuse.py (250 bodies of
    19 MB at once, the default budget): 899 MB peak RSS and 403 MB after it, against 675 MB
    and 318 MB with the threshold held. Elsewhere (no glibc) nothing changes.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, 128 * 1024)


def serve(settings: ServeSettings, say: Callable[[str], None]) -> None:
    """Serve `settings.tf_files` until stopped."""
    listener = listening_socket(settings.host, settings.port)
    try:
        model = first_model(settings.tf_files, settings.engine)
    except BaseException:
        listener.close()
        raise
    live = LiveModel(settings.tf_files, settings.engine, model, say)
    server = uvicorn_server(settings, live)
    allow_more_connections()
    return_freed_uploads()
    url = url_of(listener)
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
    server.run(sockets=[listener])
