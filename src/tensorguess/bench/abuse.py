"""Abuse of a tensorguess server from outside: slow uploads and a flood of large bodies, on
loopback only, bounded in count and time; what a normal request gets meanwhile, and the
server's peak memory.

    python -m tensorguess.bench.abuse TF_FILES PHOTO [--slow 300] [--flood 250] [--body_mb 19]

starts `tensorguess serve TF_FILES` (its defaults, or `--serve_args`) on a free loopback
port, then:
1. slow uploads: `--slow` clients each send the head of a predict request (a Content-Length
   of `--body_mb` MB) and then one byte of its body a second. Once all are sending, one normal
   request (PHOTO, as TF Serving's predict) is timed; then each slow client is watched until
   the server answers or closes it (`--slow_for` seconds at most).
2. a flood: `--flood` clients at once, each sending a body of `--body_mb` MB of random
   bytes as fast as loopback takes it (in turn base64 in a predict request, and a multipart
   upload to /v1/guess); every answer is counted, and the server's peak RSS is read from
   Linux (`VmHWM`, reset just before the flood).
3. one normal request right afterwards.

It prints the figures and exits 1 if a normal request was not answered 200 within 10 s, a
flood body got anything but a 4xx or 503, or the peak RSS passed `--max_rss_mb`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tensorguess.bench.loadtest import (
    http_request,
    loopback_only,
    read_reply,
    request_head,
    start_server,
)

PREDICT_PATH = "/v1/models/model:predict"
GUESS_PATH = "/v1/guess"
BOUNDARY = "tensorguess-abuse"
# What a normal request must get under abuse (issue 21).
NORMAL_WITHIN_SECONDS = 10.0


@dataclass(frozen=True)
class Outcome:
    """How one request ended: the status (None: closed or reset without one; -1: still
    open when given up), its answer, when, and how many bytes of its body were sent."""

    status: int | None
    seconds: float
    sent: int = 0
    body: bytes = b""


def refused(outcome: Outcome) -> bool:
    """Answered with a 4xx or a 503: what a body the server does not take should get."""
    return outcome.status is not None and (400 <= outcome.status < 500 or outcome.status == 503)


async def _answer(reader: asyncio.StreamReader) -> tuple[int | None, bytes]:
    try:
        status, body, _ = await read_reply(reader)
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError):
        return None, b""
    return status, body


async def slow_upload(
    host: str,
    port: int,
    length: int,
    every: float,
    give_up: float,
    sending: asyncio.Event | None = None,
    headers: dict[str, str] | None = None,
) -> Outcome:
    """A predict request whose body of `length` bytes comes one byte every `every` seconds,
    until the server answers or closes the connection, or `give_up` seconds have passed."""
    reader, writer = await asyncio.open_connection(host, port)
    head = request_head(
        host, port, PREDICT_PATH, length, {"Content-Type": "application/json", **(headers or {})}
    )
    start = time.perf_counter()
    answer = asyncio.ensure_future(_answer(reader))
    sent = 0
    try:
        writer.write(head)
        while sent < length and time.perf_counter() - start < give_up:
            writer.write(b"{" if sent == 0 else b" ")
            await writer.drain()
            sent += 1
            if sending is not None and sent == 1:
                sending.set()
            done, _ = await asyncio.wait({answer}, timeout=every)
            if done:
                break
    except ConnectionError:
        pass
    try:
        status, reply = await asyncio.wait_for(asyncio.shield(answer), 0.5)
    except asyncio.TimeoutError:
        answer.cancel()
        writer.close()
        return Outcome(-1, time.perf_counter() - start, sent)  # still open when given up
    writer.close()
    return Outcome(status, time.perf_counter() - start, sent, reply)


async def big_upload(host: str, port: int, head: bytes, body: memoryview) -> Outcome:
    """One request with a large body, written as fast as the server reads it (an early
    answer does not stop it: the rest is sent as an abuser would), then its answer."""
    piece = 256 * 1024
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    answer = asyncio.ensure_future(_answer(reader))
    sent = 0
    try:
        writer.write(head)
        for offset in range(0, len(body), piece):
            writer.write(body[offset : offset + piece])
            await writer.drain()
            sent = offset + piece
    except ConnectionError:
        pass
    try:
        status, reply = await asyncio.wait_for(answer, 120)
    except asyncio.TimeoutError:
        status, reply = None, b""
    writer.close()
    return Outcome(status, time.perf_counter() - start, min(sent, len(body)), reply)


def flood_requests(
    host: str, port: int, megabytes: float, headers: dict[str, str] | None = None
) -> list[tuple[bytes, bytes]]:
    """(head, body) of two requests of about `megabytes` MB of random bytes: base64 in a
    predict request, and a file in a multipart upload to /v1/guess."""
    size = int(megabytes * 1024 * 1024)
    noise = os.urandom(size * 3 // 4 - 64)
    predict = b'{"instances": [{"b64": "' + base64.b64encode(noise) + b'"}]}'
    part = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="noise.jpg"'
        "\r\nContent-Type: image/jpeg\r\n\r\n"
    ).encode()
    upload = part + os.urandom(size - len(part) - 64) + f"\r\n--{BOUNDARY}--\r\n".encode()
    json_type = {"Content-Type": "application/json", **(headers or {})}
    multipart_type = {
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        **(headers or {}),
    }
    return [
        (request_head(host, port, PREDICT_PATH, len(predict), json_type), predict),
        (request_head(host, port, GUESS_PATH, len(upload), multipart_type), upload),
    ]


async def flood(
    host: str, port: int, clients: int, requests: list[tuple[bytes, bytes]]
) -> list[Outcome]:
    """`clients` large requests at once, taking `requests` in turn."""
    loopback_only(host)
    views = [(head, memoryview(body)) for head, body in requests]
    return list(
        await asyncio.gather(
            *(big_upload(host, port, *views[client % len(views)]) for client in range(clients))
        )
    )


async def normal_request(
    host: str, port: int, photo: bytes, headers: dict[str, str] | None = None
) -> Outcome:
    """One predict request of `photo`, as any client sends it."""
    body = json.dumps({"instances": [{"b64": base64.b64encode(photo).decode()}]}).encode()
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        http_request(
            host, port, PREDICT_PATH, body, {"Content-Type": "application/json", **(headers or {})}
        )
    )
    status, reply = await asyncio.wait_for(_answer(reader), 60)
    writer.close()
    return Outcome(status, time.perf_counter() - start, len(body), reply)


async def under_slow_uploads(
    host: str,
    port: int,
    photo: bytes,
    clients: int,
    length: int,
    every: float = 1.0,
    give_up: float = 60.0,
    headers: dict[str, str] | None = None,
) -> tuple[Outcome, list[Outcome]]:
    """A normal request sent once `clients` slow uploads are all sending, and how each slow
    upload ended."""
    loopback_only(host)
    started = [asyncio.Event() for _ in range(clients)]
    slow = [
        asyncio.ensure_future(slow_upload(host, port, length, every, give_up, event, headers))
        for event in started
    ]
    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in started)), 60)
    await asyncio.sleep(every)  # every slow body has begun, and is waiting for its next byte
    normal = await normal_request(host, port, photo, headers)
    return normal, list(await asyncio.gather(*slow))


# Memory of the server, from Linux ------------------------------------------------------------


def reset_peak_rss(pid: int) -> None:
    """Start the process's peak RSS (VmHWM) again from its present RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    """The process's peak (VmHWM) or present (VmRSS) resident memory, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no {field} in /proc/{pid}/status")


def _statuses(outcomes: list[Outcome]) -> str:
    counts = Counter(
        "closed" if o.status is None else "open" if o.status < 0 else o.status for o in outcomes
    )
    return ", ".join(f"{count} {status}" for status, count in sorted(counts.items(), key=str))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tensorguess.bench.abuse",
        description="Start tensorguess serve on TF_FILES and abuse it from loopback: slow "
        "uploads, then a flood of large bodies; a normal request (PHOTO) is timed meanwhile.",
    )
    parser.add_argument("tf_files", type=Path, metavar="TF_FILES")
    parser.add_argument("photo", type=Path, metavar="PHOTO")
    parser.add_argument("--slow", type=int, default=300, help="slow uploads (default 300)")
    parser.add_argument(
        "--slow_for", type=float, default=60, help="seconds to watch them (default 60)"
    )
    parser.add_argument("--flood", type=int, default=250, help="large bodies at once (default 250)")
    parser.add_argument("--body_mb", type=float, default=19, help="their size (default 19)")
    parser.add_argument("--max_rss_mb", type=float, default=1536, help="default 1536 (1.5 GB)")
    parser.add_argument("--serve_args", default="", help="flags for the server, one string")
    args = parser.parse_args(argv)
    if not Path("/proc/self/clear_refs").exists():
        raise SystemExit("the abuse test reads the server's memory from Linux's /proc")
    photo = args.photo.read_bytes()
    server, port, log = start_server(args.tf_files, args.serve_args.split())
    host = "127.0.0.1"
    failures = []
    try:
        length = int(args.body_mb * 1024 * 1024)
        flags = args.serve_args or "(defaults)"
        print(f"server flags: {flags}; RSS {rss_mb(server.pid, 'VmRSS'):.0f} MB at rest")
        normal, slow = asyncio.run(
            under_slow_uploads(host, port, photo, args.slow, length, give_up=args.slow_for)
        )
        print(
            f"{args.slow} slow uploads (a byte a second): a normal request got {normal.status} "
            f"in {normal.seconds:.2f} s"
        )
        ended = [o.seconds for o in slow if o.status != -1]
        print(
            f"  the slow uploads: {_statuses(slow)}"
            + (f", ended after {min(ended):.1f}-{max(ended):.1f} s" if ended else "")
        )
        if normal.status != 200 or normal.seconds > NORMAL_WITHIN_SECONDS:
            failures.append("the normal request under slow uploads")

        requests = flood_requests(host, port, args.body_mb)
        reset_peak_rss(server.pid)
        start = time.perf_counter()
        outcomes = asyncio.run(flood(host, port, args.flood, requests))
        seconds = time.perf_counter() - start
        peak = rss_mb(server.pid)
        print(
            f"{args.flood} bodies of {args.body_mb:g} MB at once: {_statuses(outcomes)} in "
            f"{seconds:.1f} s; the server's peak RSS {peak:.0f} MB"
        )
        if not all(map(refused, outcomes)):
            failures.append("a flood body answered other than 4xx/503")
        if peak > args.max_rss_mb:
            failures.append(f"peak RSS over {args.max_rss_mb:g} MB")
        after = asyncio.run(normal_request(host, port, photo))
        print(
            f"right afterwards, a normal request got {after.status} in {after.seconds:.2f} s; "
            f"RSS {rss_mb(server.pid, 'VmRSS'):.0f} MB"
        )
        if after.status != 200 or after.seconds > NORMAL_WITHIN_SECONDS:
            failures.append("the normal request after the flood")
    finally:
        server.terminate()
        server.wait(timeout=60)
    print("; ".join(failures) + ": FAILED" if failures else "all held")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
