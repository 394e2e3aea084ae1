"""`tensorguess serve`: the classifier over HTTP (TF Serving's REST API, /v1/guess, a page)."""

from __future__ import annotations

import argparse
import re

from tensorguess.cli.common import (
    API_KEY_VARIABLE,
    add_debug_flag,
    add_engine_flag,
    add_tf_files,
    command_parser,
    positive_int,
    say,
    score,
    server_api_key,
)
from tensorguess.extras import require_extra

NAME = "serve"
EPILOG = """example:
  {prog} ./tf_files
then, from another shell:
  curl -s -F files=@photo.jpg localhost:8501/v1/guess
  printf '{{"instances": [{{"b64": "%s"}}]}}' "$(base64 -w0 photo.jpg)" |
    curl -s --data-binary @- localhost:8501/v1/models/model:predict
and open http://127.0.0.1:8501/ in a browser to drop photos on a page. API, limits,
Docker and the API key: docs/serve.md"""


def add_parser(commands) -> argparse.ArgumentParser:
    """The serve command and its flags."""
    serve = command_parser(
        commands,
        NAME,
        help="serve the classifier over HTTP (TF Serving's REST API and a page)",
        description="Answer TensorFlow Serving's REST API, /v1/guess and a page for photos, "
        "with the model in TF_FILES; a model train.sh writes there later is picked up.",
        epilog=EPILOG,
    )
    add_tf_files(serve)
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default 127.0.0.1, this machine only; 0.0.0.0: all)",
    )
    serve.add_argument(
        "--port", type=int, default=8501, help="default 8501, TF Serving's; 0 picks a free one"
    )
    serve.add_argument("--name", default="model", help="the model's name in /v1/models/NAME")
    serve.add_argument(
        "--api_key",
        help=f"require Authorization: Bearer KEY on every route but /healthz and the page "
        f"(default ${API_KEY_VARIABLE}; the variable keeps it out of the process list)",
    )
    serve.add_argument(
        "--max_upload_mb",
        type=float,
        default=20.0,
        help="the largest request body, in MB (default 20)",
    )
    serve.add_argument(
        "--upload_budget_mb",
        type=float,
        default=256.0,
        help="the most MB of request bodies held at once, all requests together; a body that "
        "would pass it gets 503 (default 256)",
    )
    serve.add_argument(
        "--read_timeout",
        type=float,
        default=20.0,
        help="seconds a request's head may take; its body must bring 500 bytes a second over "
        "each such span; slower clients are cut off (408) (default 20)",
    )
    serve.add_argument(
        "--min_score",
        type=score,
        default=0.0,
        help="the page marks photos whose best score is under this as unsure (0-1, default 0)",
    )
    serve.add_argument(
        "--max_batch",
        type=positive_int,
        default=32,
        help="most images in one network call (default 32)",
    )
    serve.add_argument(
        "--batch_wait_ms",
        type=float,
        default=5.0,
        help="the longest an image waits for others being decoded, to share a network call "
        "(default 5)",
    )
    serve.add_argument(
        "--max_queue",
        type=positive_int,
        default=256,
        help="most images, and requests past their upload, in the server at once; more get "
        "503 (default 256)",
    )
    serve.add_argument("--access_log", action="store_true", help="log every request")
    add_engine_flag(serve, "what runs the network, as for guess.sh (default auto)")
    add_debug_flag(serve)
    serve.set_defaults(run=run, interrupted="the server stopped")
    return serve


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C."""
    if args.max_upload_mb <= 0:
        args.command_parser.error("--max_upload_mb must be more than 0")
    if args.upload_budget_mb < args.max_upload_mb:
        args.command_parser.error(
            f"--upload_budget_mb ({args.upload_budget_mb:g}) must be at least --max_upload_mb "
            f"({args.max_upload_mb:g}): a body of the largest size must fit"
        )
    if args.read_timeout <= 0:
        args.command_parser.error("--read_timeout must be more than 0")
    if not 0 <= args.port <= 65535:
        args.command_parser.error(f"--port must be between 0 and 65535, got {args.port}")
    if args.batch_wait_ms < 0:
        args.command_parser.error("--batch_wait_ms must be 0 or more")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", args.name):
        args.command_parser.error(f"--name {args.name!r}: use letters, digits, '.', '_' and '-'")
    api_key = server_api_key(args)
    require_extra("serve")
    from tensorguess.serve.context import ServeSettings
    from tensorguess.serve.server import serve

    settings = ServeSettings(
        tf_files=args.tf_files,
        host=args.host,
        port=args.port,
        name=args.name,
        api_key=api_key,
        max_upload_mb=args.max_upload_mb,
        upload_budget_mb=args.upload_budget_mb,
        read_timeout=args.read_timeout,
        min_score=args.min_score,
        engine=args.engine,
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        max_queue=args.max_queue,
        access_log=args.access_log,
    )
    serve(settings, say)
    return 0
