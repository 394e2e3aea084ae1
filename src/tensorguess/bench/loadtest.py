"""Load on a tensorguess server: N clients, each sending its requests one after another on
one keep-alive connection; requests/s and latency percentiles.

The clients are light (asyncio streams and a minimal HTTP/1.1 reader), so that on a small
machine most of the CPU goes to the server being measured. Only loopback addresses are
accepted: a load test here never leaves the machine.

    python -m tensorguess.bench.loadtest TF_FILES PHOTOS [--clients 1 8 32] [--requests 400]

starts `tensorguess serve TF_FILES` on a free loopback port, sends TF Serving predict
requests of one photo each (the photos of PHOTOS in turn) at each number of clients, and
prints a table; `--compare` also times guessDir on PHOTOS and guess.sh on single photos,
and `--serve_args` passes flags to the server (`--serve_args=--max_batch=1` shows what
batching brings).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Reply:
    """One answer: its status, its body and how long it took, in seconds."""

    status: int
    body: bytes
    seconds: float

    def json(self):
        return json.loads(self.body)


def predict_body(photo: bytes) -> bytes:
    """A TF Serving predict request for one photo."""
    return json.dumps({"instances": [{"b64": base64.b64encode(photo).decode()}]}).encode()


def request_head(host: str, port: int, path: str, length: int, headers: dict[str, str]) -> bytes:
    """The head of an HTTP/1.1 POST whose body of `length` bytes follows."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def http_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The bytes of one HTTP/1.1 POST."""
    return request_head(host, port, path, len(body), headers) + body


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, whether the server closes the connection) of one HTTP/1.1 answer."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {}
    for line in head[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip().lower()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, body, headers.get("connection") == "close"


async def _client(host: str, port: int, requests: list[bytes]) -> list[Reply]:
    replies: list[Reply] = []
    reader = writer = None
    for request in requests:
        start = time.perf_counter()
        if writer is None:
            reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        status, body, closed = await read_reply(reader)
        replies.append(Reply(status, body, time.perf_counter() - start))
        if closed:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()
    return replies


def loopback_only(host: str) -> None:
    """Refuse any host but this machine's loopback: the load tests never leave the machine."""
    address = socket.getaddrinfo(host, None)[0][4][0]
    if not ipaddress.ip_address(address.split("%")[0]).is_loopback:
        raise ValueError(f"{host}: the load test only sends to this machine's loopback")


def send_load(
    host: str,
    port: int,
    path: str,
    bodies: list[bytes],
    clients: int,
    requests_per_client: int,
    headers: dict[str, str] | None = None,
) -> tuple[list[list[Reply]], float]:
    """Each client sends `requests_per_client` requests, taking `bodies` in turn (client c
    starts at body c); returns every client's replies, in order, and the wall time."""
    loopback_only(host)
    headers = {"Content-Type": "application/json", **(headers or {})}
    requests = [http_request(host, port, path, body, headers) for body in bodies]
    plans = [
        [requests[(client + number) % len(requests)] for number in range(requests_per_client)]
        for client in range(clients)
    ]

    async def everyone():
        return await asyncio.gather(*(_client(host, port, plan) for plan in plans))

    start = time.perf_counter()
    replies = asyncio.run(everyone())
    return replies, time.perf_counter() - start


def summary(replies: list[list[Reply]], seconds: float) -> dict:
    """Requests/s, p50 and p99 latency in ms, and the count of non-200 answers."""
    flat = [reply for client in replies for reply in client]
    latencies = np.array([reply.seconds for reply in flat]) * 1000
    return {
        "requests": len(flat),
        "requests_per_s": len(flat) / seconds,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "failed": sum(reply.status != 200 for reply in flat),
    }


# The benchmark run by hand (docs/benchmarks.md) ------------------------------------------


def _photos(folder: Path) -> list[Path]:
    suffixes = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic"}
    return sorted(path for path in folder.iterdir() if path.suffix.lower() in suffixes)


def start_server(tf_files: Path, extra: list[str]) -> tuple[subprocess.Popen, int, Path]:
    """`tensorguess serve TF_FILES` on a free loopback port once it answers: process, port, log."""
    log = Path(tempfile.mkstemp(prefix="tensorguess-serve-", suffix=".log")[1])
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorguess", "serve", str(tf_files), "--port", "0", *extra],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = re.search(r"on http://127\.0\.0\.1:(\d+)/", log.read_text())
        if found:
            port = int(found.group(1))
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
                return server, port, log
            except OSError:
                pass
        if server.poll() is not None:
            break
        time.sleep(0.2)
    server.kill()
    raise SystemExit(f"the server did not start:\n{log.read_text()}")


def _timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tensorguess.bench.loadtest",
        description="Start tensorguess serve on TF_FILES and measure it under N clients, each "
        "sending predict requests of one photo of PHOTOS (loopback only).",
    )
    parser.add_argument("tf_files", type=Path, metavar="TF_FILES")
    parser.add_argument(
        "photos", type=Path, help="a folder of photos (its top level, as guessDir reads)"
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="default 1 8 32")
    parser.add_argument("--requests", type=int, default=400, help="per level (default 400)")
    parser.add_argument("--serve_args", default="", help="flags for the server, one string")
    parser.add_argument("--compare", action="store_true", help="time guessDir and guess.sh too")
    args = parser.parse_args(argv)
    photos = _photos(args.photos)
    bodies = [predict_body(path.read_bytes()) for path in photos]
    server, port, log = start_server(args.tf_files, args.serve_args.split())
    rows = []
    try:
        send_load("127.0.0.1", port, "/v1/models/model:predict", bodies[:16], 4, 8)  # warm up
        for clients in args.clients:
            per_client = max(1, args.requests // clients)
            replies, seconds = send_load(
                "127.0.0.1", port, "/v1/models/model:predict", bodies, clients, per_client
            )
            rows.append((clients, summary(replies, seconds)))
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(f"{len(photos)} photos; server flags: {args.serve_args or '(defaults)'}")
    print(log.read_text().strip().splitlines()[-1])
    print("| clients | requests | requests/s | p50 latency | p99 latency | failed |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for clients, row in rows:
        print(
            f"| {clients} | {row['requests']} | {row['requests_per_s']:.1f} | "
            f"{row['p50_ms']:.0f} ms | {row['p99_ms']:.0f} ms | {row['failed']} |"
        )
    if args.compare:
        tensorguess = [sys.executable, "-m", "tensorguess"]
        destination = Path(tempfile.mkdtemp(prefix="tensorguess-sorted-"))
        try:
            seconds = _timed(
                [*tensorguess, "sort", str(args.tf_files), str(args.photos), str(destination)]
            )
        finally:
            shutil.rmtree(destination, ignore_errors=True)
        print(
            f"guessDir (whole command, {len(photos)} photos): {len(photos) / seconds:.1f} images/s"
        )
        singles = [
            _timed([*tensorguess, "guess", str(args.tf_files), str(path)]) for path in photos[:5]
        ]
        print(f"guess.sh per photo (whole command, 5 photos): {np.mean(singles):.2f} s each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
