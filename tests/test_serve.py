"""tensorguess serve: the real server on a free loopback port, driven as its clients drive it.

One server runs for the whole module, on a private copy of the session's model, with an
API key (from TENSORGUESS_API_KEY) and small limits so that they can be reached. The
retrain test switches that server to a new model, so it comes last. A server with a model
that fails on purpose runs in this process (`failing_server`), and the model watcher is
driven on its own.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import io
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from helpers import (
    CHROMEDRIVER,
    CHROMIUM,
    LABELS,
    NO_BROWSER,
    ROOT,
    draw_photos,
    headless_chromium,
    in_process,
    one_line_error,
    tensorguess,
    write_broken,
)

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from tensorguess.bench.abuse import (  # noqa: E402
    PREDICT_PATH,
    flood,
    flood_requests,
    refused,
    reset_peak_rss,
    rss_mb,
    under_slow_uploads,
)
from tensorguess.bench.loadtest import predict_body, request_head, send_load  # noqa: E402
from tensorguess.cli import main  # noqa: E402

KEY = "correct horse battery staple"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_QUEUE = 48
MAX_UPLOAD_MB = 3
UPLOAD_BUDGET_MB = 10
READ_TIMEOUT = 4
MB = 1024 * 1024


class Server:
    """The running server: where it is, its log and temporary folder, and the photos with
    guess.sh's answers."""

    def __init__(self, process, port, log, tf_files, photos, guessed, min_score):
        self.process, self.port, self.log, self.tf_files = process, port, log, tf_files
        self.photos, self.guessed, self.min_score = photos, guessed, min_score
        self.temporary = log.parent / "tmp"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def call(self, method, path, body=None, headers=None, key=KEY):
        """(status, JSON answer, headers) of one request; the API key unless key=None."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = dict(headers or {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        if isinstance(body, dict | list):
            body = json.dumps(body).encode()
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        headers = {name.lower(): value for name, value in response.getheaders()}
        is_json = headers.get("content-type", "").startswith("application/json")
        return response.status, json.loads(data) if is_json else data, headers


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, dict]:
    """A multipart/form-data body with `files` under the field `files`."""
    boundary = "tensorguess-test-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in files
    ]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def start_server(
    tf_files: Path, log: Path, temporary: Path, *flags: str
) -> tuple[subprocess.Popen, int]:
    """`tensorguess serve` on a free loopback port, once /healthz answers."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorguess", "serve", str(tf_files), "--port", "0", *flags],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        env={**os.environ, "TENSORGUESS_API_KEY": KEY, "TMPDIR": str(temporary)},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        found = re.search(r" on http://127\.0\.0\.1:(\d+)/", log.read_text())
        if found:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", int(found.group(1)))
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    return process, int(found.group(1))
            except OSError:
                pass
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"the server did not start:\n{log.read_text()}")


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    """The server on a copy of the session's model, with guess.sh's answers for its photos."""
    root = tmp_path_factory.mktemp("serve")
    tf_files = Path(shutil.copytree(trained[0], root / "tf_files"))
    photos = [
        *draw_photos(root / "photos", "circle", 4, seed=70),
        *draw_photos(root / "photos", "square", 4, seed=71),
    ]
    guessed = {
        Path(result["image"]).name: result
        for result in json.loads(tensorguess("guess", tf_files, *photos, "--json").stdout)
    }
    # --min_score between two photos' best scores: the page must mark one unsure, not both.
    best = sorted(guessed.values(), key=lambda result: result["predictions"][0]["score"])
    min_score = (best[0]["predictions"][0]["score"] + best[-1]["predictions"][0]["score"]) / 2
    log = root / "server.log"
    (root / "tmp").mkdir()
    process, port = start_server(
        tf_files,
        log,
        root / "tmp",
        *("--max_queue", str(MAX_QUEUE), "--max_upload_mb", str(MAX_UPLOAD_MB)),
        *("--upload_budget_mb", str(UPLOAD_BUDGET_MB), "--read_timeout", str(READ_TIMEOUT)),
        *("--min_score", f"{min_score:.6f}"),
    )
    yield Server(process, port, log, tf_files, photos, guessed, min_score)
    process.terminate()
    process.wait(timeout=60)


def assert_scores_match(labels, scores, expected, tolerance=1e-4):
    """Scores in label order against a `guess --json` result (labels best first)."""
    expected_scores = {item["label"]: item["score"] for item in expected["predictions"]}
    assert set(labels) == set(expected_scores)
    for label, score in zip(labels, scores, strict=True):
        assert abs(score - expected_scores[label]) <= tolerance, (label, score, expected)


def test_tf_serving_requests_answer_as_guess_sh(server):
    photos, guessed = server.photos, server.guessed
    status, answer, _ = server.call("GET", "/v1/models/model")
    assert status == 200
    (version,) = answer["model_version_status"]
    assert version["state"] == "AVAILABLE" and version["version"].isdigit()
    status, metadata, _ = server.call("GET", "/v1/models/model/metadata")
    assert status == 200 and metadata["model_spec"]["version"] == version["version"]
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert list(signature["inputs"]) == ["images"]
    assert metadata["metadata"]["tensorguess"]["labels"] == list(LABELS)

    # Rows, each image plain or under the input's name; then columns; then classify.
    instances = [
        {"b64": b64(path)} if index % 2 else {"images": {"b64": b64(path)}}
        for index, path in enumerate(photos)
    ]
    status, answer, _ = server.call("POST", "/v1/models/model:predict", {"instances": instances})
    assert status == 200, answer
    assert len(answer["predictions"]) == len(photos)
    for path, prediction in zip(photos, answer["predictions"], strict=True):
        assert prediction["classes"] == list(LABELS)
        assert_scores_match(prediction["classes"], prediction["scores"], guessed[path.name])

    inputs = {"images": [{"b64": b64(path)} for path in photos[:3]]}
    path = f"/v1/models/model/versions/{version['version']}:predict"
    status, answer, _ = server.call("POST", path, {"inputs": inputs})
    assert status == 200, answer
    outputs = answer["outputs"]
    for photo, scores, classes in zip(
        photos[:3], outputs["scores"], outputs["classes"], strict=True
    ):
        assert_scores_match(classes, scores, guessed[photo.name])

    examples = [{"image": {"b64": b64(path)}} for path in photos[-2:]]
    status, answer, _ = server.call("POST", "/v1/models/model:classify", {"examples": examples})
    assert status == 200, answer
    for photo, pairs in zip(photos[-2:], answer["result"], strict=True):
        labels, scores = zip(*pairs, strict=True)
        assert_scores_match(labels, scores, guessed[photo.name])


def test_guess_route_labels_good_uploads_and_names_broken_ones(server, tmp_path):
    broken = write_broken(tmp_path / "broken")
    good = server.photos[:3]
    files = [(path.name, path.read_bytes()) for path in good]
    files += [(path.name, path.read_bytes()) for path, _ in broken.values()]
    # A 2 MB photo: Starlette's own form parser would spool it to a temporary file.
    noise = np.random.default_rng(0).integers(0, 256, (700, 1000, 3), dtype=np.uint8)
    stream = io.BytesIO()
    Image.fromarray(noise).save(stream, format="PNG")
    assert len(stream.getvalue()) > 2_000_000
    files.append(("noise.png", stream.getvalue()))
    body, headers = multipart(files)
    status, answer, _ = server.call("POST", "/v1/guess", body, headers)
    assert status == 200, answer
    by_name = {result["image"]: result for result in answer}
    assert len(by_name["noise.png"]["predictions"]) == len(LABELS)
    # Nothing from a request was written to disk.
    assert list(server.temporary.iterdir()) == []
    for path in good:
        result = by_name[path.name]
        expected = server.guessed[path.name]
        assert [item["label"] for item in result["predictions"]] == [
            item["label"] for item in expected["predictions"]
        ]
        labels = [item["label"] for item in result["predictions"]]
        assert_scores_match(labels, [item["score"] for item in result["predictions"]], expected)
    for case, (path, reason) in broken.items():
        assert reason in by_name[path.name]["error"], case
        assert "predictions" not in by_name[path.name]

    # One photo as the body, and --top_k; then only broken files: 400, naming the first.
    photo = server.photos[0]
    status, answer, _ = server.call(
        "POST", "/v1/guess?top_k=1", photo.read_bytes(), {"Content-Type": "image/jpeg"}
    )
    assert status == 200 and len(answer[0]["predictions"]) == 1
    assert (
        answer[0]["predictions"][0]["label"]
        == server.guessed[photo.name]["predictions"][0]["label"]
    )
    body, headers = multipart([(path.name, path.read_bytes()) for path, _ in broken.values()])
    status, answer, _ = server.call("POST", "/v1/guess", body, headers)
    assert status == 400 and "cut short.jpg" in answer["error"], answer


def bad_requests(photo: Path, tmp_path: Path) -> list[tuple]:
    """(what, method, path, body, headers, status, words in the error)."""
    broken = write_broken(tmp_path / "broken")
    truncated = broken["truncated jpeg"][0].read_bytes()
    bomb = broken["decompression bomb"][0].read_bytes()
    text = b"shopping list: milk, eggs\n"

    def predict(*datas):
        return {"instances": [{"b64": base64.b64encode(data).decode()} for data in datas]}

    good = photo.read_bytes()
    json_type = {"Content-Type": "application/json"}
    no_files, multipart_type = multipart([])
    too_big = {"instances": [{"b64": "A" * (MAX_UPLOAD_MB * 1024 * 1024 + 8)}]}
    return [
        ("not an image", "POST", ":predict", predict(good, text), {}, 400, "instance 1: not an"),
        ("truncated", "POST", ":predict", predict(truncated), {}, 400, "truncated"),
        ("bomb", "POST", ":predict", predict(bomb), {}, 400, "decompression bomb"),
        ("bad base64", "POST", ":predict", {"instances": [{"b64": "@@"}]}, {}, 400, "base64"),
        ("malformed JSON", "POST", ":predict", b'{"instances": [', json_type, 400, "malformed"),
        ("no images", "POST", ":predict", {"instances": []}, {}, 400, "no image"),
        ("not b64", "POST", ":predict", {"instances": ["x"]}, {}, 400, '{"b64"'),
        ("both forms", "POST", ":predict", {"instances": [], "inputs": []}, {}, 400, "either"),
        ("signature", "POST", ":predict", {"signature_name": "x", "inputs": []}, {}, 400, "sig"),
        ("no example", "POST", ":classify", {"examples": [{}]}, {}, 400, "example 0"),
        ("unknown model", "POST", "/v1/models/other:predict", predict(good), {}, 404, "other"),
        ("unknown version", "GET", "/v1/models/model/versions/7", None, {}, 404, "version"),
        ("unknown route", "GET", "/v2/anything", None, {}, 404, "no route"),
        ("wrong method", "DELETE", "/v1/guess", None, {}, 405, "DELETE"),
        ("over the size limit", "POST", ":predict", too_big, {}, 413, "size limit"),
        ("too many images", "POST", ":predict", predict(*[good] * 49), {}, 413, "at most 48"),
        ("not multipart", "POST", "/v1/guess", b"{}", json_type, 415, "multipart"),
        ("no file", "POST", "/v1/guess", no_files, multipart_type, 400, "no file"),
        ("top_k", "POST", "/v1/guess?top_k=0", good, {"Content-Type": "image/jpeg"}, 400, "top_k"),
    ]


def test_bad_requests_get_a_4xx_and_one_line_and_the_server_goes_on(server, tmp_path):
    for what, method, path, body, headers, status, words in bad_requests(
        server.photos[0], tmp_path
    ):
        if path.startswith(":"):
            path = f"/v1/models/model{path}"
        answer_status, answer, _ = server.call(method, path, body, headers)
        assert answer_status == status, (what, answer)
        assert list(answer) == ["error"], (what, answer)
        assert "\n" not in answer["error"] and words in answer["error"], (what, answer)
    status, answer, _ = server.call("GET", "/healthz", key=None)
    assert (status, answer) == (200, {"status": "ok"})


def test_32_clients_of_20_requests_are_all_answered_with_guess_sh_labels(server):
    bodies = [predict_body(path.read_bytes()) for path in server.photos]
    best = [server.guessed[path.name]["predictions"][0]["label"] for path in server.photos]
    replies, seconds = send_load(
        "127.0.0.1",
        server.port,
        "/v1/models/model:predict",
        bodies,
        clients=32,
        requests_per_client=20,
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert sum(map(len, replies)) == 32 * 20
    for client, answers in enumerate(replies):
        for number, reply in enumerate(answers):
            assert reply.status == 200, reply.body
            (prediction,) = reply.json()["predictions"]
            label = prediction["classes"][prediction["scores"].index(max(prediction["scores"]))]
            assert label == best[(client + number) % len(bodies)]
    print(f"32 clients x 20 requests: {640 / seconds:.0f} requests/s")


def test_overload_answers_503_at_once(server):
    # 12 requests of 16 images at once against a server that holds 48 images.
    body = json.dumps({"instances": [{"b64": b64(server.photos[0])}] * 16}).encode()
    replies, seconds = send_load(
        "127.0.0.1",
        server.port,
        "/v1/models/model:predict",
        [body],
        clients=12,
        requests_per_client=1,
        headers={"Authorization": f"Bearer {KEY}"},
    )
    statuses = sorted(reply.status for (reply,) in replies)
    assert set(statuses) == {200, 503} and statuses.count(200) >= 3, statuses
    busy = [reply for (reply,) in replies if reply.status == 503]
    assert all("busy" in reply.json()["error"] for reply in busy)
    assert max(reply.seconds for reply in busy) < min(
        reply.seconds for (reply,) in replies if reply.status == 200
    )


def test_slow_clients_keep_no_one_out_and_are_cut_off(server):
    """More slow uploads (a byte every half second) than the server takes requests at work:
    a normal request is answered meanwhile, and each slow one gets 408 once it falls behind.
    A connection that sends nothing, and one that sends its head a byte at a time, are
    closed as late; a head too large gets 431 at once."""
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=READ_TIMEOUT + 10)
    dribbling = socket.create_connection(("127.0.0.1", server.port), timeout=READ_TIMEOUT + 10)
    head = b"GET /v1/models/model HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"x" * 100
    closed: list[float] = []
    start = time.monotonic()
    threads = [
        threading.Thread(target=_dribble, args=(dribbling, head, 0.2)),
        *(threading.Thread(target=_until_closed, args=(c, closed)) for c in (silent, dribbling)),
    ]
    for thread in threads:
        thread.start()
    normal, slow = asyncio.run(
        under_slow_uploads(
            "127.0.0.1",
            server.port,
            server.photos[0].read_bytes(),
            clients=MAX_QUEUE + 12,
            length=100_000,
            every=0.5,
            give_up=READ_TIMEOUT + 30,
            headers=AUTH,
        )
    )
    assert normal.status == 200 and normal.seconds < 10, normal
    assert [outcome.status for outcome in slow] == [408] * len(slow)
    assert "too slowly" in json.loads(slow[0].body)["error"]
    # Cut off after --read_timeout seconds without 500 bytes a second, not before.
    assert all(READ_TIMEOUT - 0.5 < outcome.seconds < READ_TIMEOUT + 10 for outcome in slow)
    for thread in threads:
        thread.join()
    silent.close()
    dribbling.close()
    assert len(closed) == 2 and all(
        READ_TIMEOUT - 0.5 < at - start < READ_TIMEOUT + 5 for at in closed
    )

    huge = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        huge.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"x" * 200_000)
    except OSError:
        pass  # closed while sending; the answer is there to read all the same
    answer = huge.recv(1000)
    huge.close()
    assert answer.startswith(b"HTTP/1.1 431 ") and b'"error":' in answer


def _until_closed(connection: socket.socket, closed: list[float] | None = None) -> None:
    """Read until the server closes the connection, noting when in `closed` (a timeout
    fails the test, or leaves `closed` short)."""
    try:
        while connection.recv(65536):
            pass
    except ConnectionResetError:
        pass  # closed with bytes of ours unread: a reset rather than an end
    if closed is not None:
        closed.append(time.monotonic())


def _dribble(connection: socket.socket, data: bytes, every: float) -> None:
    for index in range(len(data)):
        try:
            connection.send(data[index : index + 1])
        except OSError:
            return
        time.sleep(every)


def _budget_full(port: int) -> bool:
    """Whether the server refuses a body of 1 KB now, asked with its head alone (admitted,
    it holds nothing and is let go)."""
    probe = socket.create_connection(("127.0.0.1", port), timeout=0.2)
    probe.sendall(request_head("127.0.0.1", port, PREDICT_PATH, 1024, AUTH))
    try:
        return probe.recv(100).startswith(b"HTTP/1.1 503 ")
    except TimeoutError:
        return False  # admitted: it waits for a body that never comes
    finally:
        probe.close()


def test_uploads_count_against_the_budget_for_what_they_sent_until_they_end(server):
    """Four clients that have sent their bodies but the last byte hold the whole budget
    (10 MB): a small request gets 503 with Retry-After at once. Once they hang up, their
    bytes are given back and it is answered."""
    holders = []
    for megabytes in (3, 3, 3, 1):
        holder = socket.create_connection(("127.0.0.1", server.port))
        length = megabytes * MB
        headers = {**AUTH, "Content-Type": "application/json"}
        holder.sendall(request_head("127.0.0.1", server.port, PREDICT_PATH, length, headers))
        holder.sendall(b" " * (length - 1))
        holders.append(holder)
    body = predict_body(server.photos[0].read_bytes())
    try:
        deadline = time.monotonic() + READ_TIMEOUT / 2
        while not _budget_full(server.port) and time.monotonic() < deadline:
            pass  # until the server has read what they sent
        status, answer, headers = server.call("POST", PREDICT_PATH, body)
    finally:
        for holder in holders:
            holder.close()
    assert status == 503, answer
    assert "MB of uploads in progress, at most 10 MB" in answer["error"]
    assert headers["retry-after"] == "1"
    deadline = time.monotonic() + 5
    while server.call("POST", PREDICT_PATH, body)[0] != 200:
        assert time.monotonic() < deadline, "the budget was not given back"
        time.sleep(0.05)


def test_a_flood_of_large_bodies_is_refused_within_the_budget_and_the_server_goes_on(server):
    """40 bodies of nearly the largest size at once, of random bytes (as base64 in predict
    requests and as files in /v1/guess uploads): all refused, the server's memory stays
    near its budget, and the next request is answered."""
    requests = flood_requests("127.0.0.1", server.port, MAX_UPLOAD_MB - 0.1, AUTH)
    resting = rss_mb(server.process.pid, "VmRSS")
    reset_peak_rss(server.process.pid)
    outcomes = asyncio.run(flood("127.0.0.1", server.port, 40, requests))
    grown = rss_mb(server.process.pid) - resting
    statuses = [outcome.status for outcome in outcomes]
    assert all(map(refused, outcomes)), statuses
    assert statuses.count(503) >= 20 and 400 in statuses, statuses
    # 40 bodies of 2.9 MB are 116 MB; the budget holds 10 MB of them at once.
    assert grown < 60, f"the server grew by {grown:.0f} MB"
    status, answer, _ = server.call(
        "POST", PREDICT_PATH, predict_body(server.photos[0].read_bytes())
    )
    assert status == 200, answer


def test_a_body_sent_without_its_length_is_held_to_the_size_limit(server):
    photo = server.photos[0]
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.request(
        "POST",
        "/v1/guess",
        body=iter([photo.read_bytes()[:1000], photo.read_bytes()[1000:]]),
        headers={**AUTH, "Content-Type": "image/jpeg", "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    response = connection.getresponse()
    assert response.status == 200, response.read()
    connection.close()

    # Chunks past the limit: 413 as soon as it is passed. The rest is read and dropped, so
    # that the client sees the answer, but for --read_timeout seconds at most.
    chunk = b"%x\r\n" % (256 * 1024) + b"\0" * 256 * 1024 + b"\r\n"
    head = (
        f"POST /v1/guess HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
        "Content-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    upload = socket.create_connection(("127.0.0.1", server.port), timeout=READ_TIMEOUT + 10)
    endless = threading.Thread(
        target=_send_until_closed, args=(upload, head + chunk * (4 * MAX_UPLOAD_MB + 4))
    )
    endless.start()
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
        answer += upload.recv(65536)
    answered = time.monotonic()
    _until_closed(upload)
    closed = time.monotonic()
    endless.join()
    upload.close()
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == (
        f"the request is over the size limit of {MAX_UPLOAD_MB} MB"
    )
    assert READ_TIMEOUT - 0.5 < closed - answered < READ_TIMEOUT + 5


def _send_until_closed(connection: socket.socket, data: bytes) -> None:
    """Send `data`, then a chunk of one byte every 0.1 s, until the server closes."""
    try:
        connection.sendall(data)
        while True:
            connection.sendall(b"1\r\n\0\r\n")
            time.sleep(0.1)
    except OSError:
        pass


class FailingClassifier:
    """Stands in for the network, and fails as a bug or a broken runtime would."""

    labels = list(LABELS)
    image_size = (32, 32)
    engine, precision, takes_pixels = "openvino", "f32", True

    def predict_pixels(self, pixels, names):
        raise RuntimeError("cannot infer /srv/secret/model.xml on CPU")


def test_a_failure_of_the_server_is_a_500_that_tells_the_client_nothing(tmp_path, caplog):
    from tensorguess.serve.context import ServeSettings
    from tensorguess.serve.model import LiveModel, ServedModel, model_stamp
    from tensorguess.serve.server import listening_socket, uvicorn_server

    model = ServedModel(FailingClassifier(), 1, model_stamp(tmp_path), {})
    server = uvicorn_server(
        ServeSettings(tmp_path), LiveModel(tmp_path, None, model, lambda line: None)
    )
    listener = listening_socket("127.0.0.1", 0)
    port = listener.getsockname()[1]
    log = logging.getLogger("uvicorn.error")  # where uvicorn writes the server's errors
    log.addHandler(caplog.handler)
    running = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
    running.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and running.is_alive()
            time.sleep(0.02)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = predict_body((ROOT / "test_data" / "IMG_5549.JPG").read_bytes())
        connection.request("POST", PREDICT_PATH, body=body)
        response = connection.getresponse()
        answer = json.loads(response.read())
        connection.close()
    finally:
        server.should_exit = True
        running.join(timeout=30)
        log.removeHandler(caplog.handler)
    assert response.status == 500
    assert answer == {"error": "internal error; the server's log has the details"}
    assert "Traceback" in caplog.text and "cannot infer /srv/secret/model.xml" in caplog.text


def test_the_model_watcher_reports_any_failure_and_keeps_watching(tmp_path, monkeypatch):
    """A new model whose loading fails in a way nobody foresaw (OpenVINO cannot compile it,
    say) is reported with its traceback, the old model stays, and a good model written later
    is picked up."""
    from tensorguess.serve import model as served

    graph = tmp_path / served.GRAPH_FILE
    graph.write_bytes(b"1")
    first = served.ServedModel(SimpleNamespace(labels=["old"]), 1, served.model_stamp(tmp_path), {})
    outcomes = [
        RuntimeError("Exception from src/inference: cannot compile the model"),
        served.ServedModel(SimpleNamespace(labels=["new"]), 2, (), {}),
    ]

    def load(tf_files, engine):
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return replace(outcome, stamp=served.model_stamp(tf_files))

    monkeypatch.setattr(served, "load_served_model", load)
    said: list[str] = []
    live = served.LiveModel(tmp_path, None, first, said.append)

    async def watched() -> None:
        watching = asyncio.create_task(live.watch(every=0.01))

        async def until(condition) -> None:
            for _ in range(500):
                if condition():
                    return
                assert not watching.done(), watching.exception()
                await asyncio.sleep(0.01)
            raise AssertionError(f"waited in vain; said: {said}")

        graph.write_bytes(b"22")  # a new model, which fails to load
        await until(lambda: said)
        assert live.current is first
        graph.write_bytes(b"333")  # and a good one, later
        await until(lambda: live.current.labels == ["new"])
        watching.cancel()

    asyncio.run(watched())
    failure, switch = said
    assert "still serving version 1" in failure and "RuntimeError" in failure
    assert "cannot compile the model" in failure and "Traceback" in failure
    assert "now serving the new model" in switch and "version 2" in switch


def test_the_api_key_guards_every_route_but_health_and_the_page(server):
    for key in (None, "wrong key", KEY[:-1]):
        status, answer, headers = server.call("GET", "/v1/models/model", key=key)
        assert status == 401 and "API key" in answer["error"]
        assert headers["www-authenticate"] == "Bearer"
    for path in ("/docs", "/openapi.json", "/v1/models/model/metadata"):
        assert server.call("GET", path, key=None)[0] == 401
    assert server.call("GET", "/healthz", key=None)[0] == 200
    connection = http.client.HTTPConnection("127.0.0.1", server.port)
    connection.request("GET", "/")
    response = connection.getresponse()
    page = response.read().decode()
    assert response.status == 200 and "Drop photos" in page
    # Nothing from the internet: no remote address in the page, and the browser may not load one.
    assert not re.search(r"(https?:)?//[a-z]", page.replace("://127.0.0.1", ""))
    assert "default-src 'none'" in response.getheader("content-security-policy")
    status, openapi, _ = server.call("GET", "/openapi.json")
    assert status == 200 and "/v1/models/{name}:predict" in openapi["paths"]
    status, _, headers = server.call("GET", "/docs")
    assert status == 200 and headers["content-type"].startswith("text/html")


def test_what_stops_the_server_from_starting_is_one_line(server, tmp_path, capsys):
    taken = tensorguess("serve", server.tf_files, "--port", str(server.port), check=False)
    one_line_error(taken, f"port {server.port}", "in use", "--port")
    untrained = tensorguess("serve", tmp_path, "--port", "0", check=False)
    one_line_error(untrained, "model not found", "train.sh")
    with pytest.raises(SystemExit) as stopped:  # (the folder holds no model: nothing serves)
        main(["serve", str(tmp_path), "--max_upload_mb", "300", "--port", "0"])
    assert stopped.value.code == 2
    assert "--upload_budget_mb (256) must be at least --max_upload_mb" in capsys.readouterr().err


def test_serve_installs_its_extra_on_first_use_or_says_how(tmp_path, monkeypatch, capsys):
    from tensorguess import extras

    installs = []

    def pip(command, **kwargs):
        installs.append(command)
        monkeypatch.setitem(extras.EXTRAS, "serve", (("json",), "fastapi, ..."))  # installed
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setitem(extras.EXTRAS, "serve", (("no_such_module",), "fastapi, ..."))
    monkeypatch.setattr(extras.subprocess, "run", pip)
    # Installed, it goes on to serve: here a folder with no model, so one line says so.
    assert main(["serve", str(tmp_path), "--port", "0"]) == 1
    (command,) = installs
    assert command[-2:] == ["-e", f"{extras.PROJECT_ROOT}[serve]"]
    installing, error = capsys.readouterr().err.splitlines()
    assert installing.startswith("tensorguess: installing the serve extra")
    assert error.startswith("tensorguess: error:") and "model not found" in error

    monkeypatch.setitem(extras.EXTRAS, "serve", (("no_such_module",), "fastapi, ..."))
    monkeypatch.setattr(
        extras.subprocess,
        "run",
        lambda command, **kwargs: subprocess.CompletedProcess(command, 1, "", "ERROR: offline"),
    )
    assert main(["serve", str(tmp_path), "--port", "0"]) == 1
    error = capsys.readouterr().err.splitlines()[-1]
    assert "offline" in error and "install it yourself" in error and "[serve]" in error


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason=NO_BROWSER)
def test_the_page_labels_a_photo_chosen_in_headless_chromium(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    best = sorted(server.guessed, key=lambda name: server.guessed[name]["predictions"][0]["score"])
    unsure, sure = best[0], best[-1]
    by_name = {path.name: path for path in server.photos}
    with headless_chromium(tmp_path / "profile", 1100, 800) as driver:
        driver.get(server.url)
        # The server has a key: the page asks for it before sending anything.
        key_field = driver.find_element(By.ID, "key")
        assert key_field.is_displayed()
        key_field.send_keys(KEY)
        driver.find_element(By.CSS_SELECTOR, "#keyform button").click()
        driver.find_element(By.ID, "files").send_keys(
            "\n".join(str(by_name[name]) for name in (unsure, sure))
        )
        WebDriverWait(driver, 60).until(
            lambda page: (
                len(page.find_elements(By.CSS_SELECTOR, ".card .bars")) == 2
                and page.find_element(By.ID, "model").text.endswith("labels: circle, square")
            )
        )
        cards = {
            card.find_element(By.CLASS_NAME, "file").text: card
            for card in driver.find_elements(By.CLASS_NAME, "card")
        }
        for name in (unsure, sure):
            expected = server.guessed[name]["predictions"]
            label = cards[name].find_element(By.CLASS_NAME, "label").text
            assert label == expected[0]["label"]
            shown = cards[name].find_elements(By.CSS_SELECTOR, ".bars .name")
            assert [bar.text for bar in shown] == [item["label"] for item in expected]
        assert "unsure" in cards[unsure].get_attribute("class")
        assert "unsure" not in cards[sure].get_attribute("class")
        # Then each card's heat map, drawn by the browser (the first waits for TensorFlow).
        WebDriverWait(driver, 120).until(
            lambda page: len(page.find_elements(By.CSS_SELECTOR, ".card img.heat")) == 2
        )
        for name in (unsure, sure):
            heat = cards[name].find_element(By.CSS_SELECTOR, "img.heat")
            assert driver.execute_script("return arguments[0].naturalWidth", heat) > 50
            best_label = server.guessed[name]["predictions"][0]["label"]
            assert heat.get_attribute("title").endswith(f"evidence for {best_label}")
        screenshot = tmp_path / "page.png"
        driver.save_screenshot(str(screenshot))
        print(f"screenshot: {screenshot}")
    assert screenshot.stat().st_size > 10_000


def test_guess_explains_a_photo_only_when_asked(server):
    photo = server.photos[0]
    body, headers = multipart([(photo.name, photo.read_bytes())])
    status, plain, _ = server.call("POST", "/v1/guess", body, headers)
    assert status == 200 and "heatmap" not in plain[0]
    status, answer, _ = server.call("POST", "/v1/guess?explain=1", body, headers)
    assert status == 200, answer
    (result,) = answer
    assert result["predictions"] == plain[0]["predictions"]
    assert result["heatmap_label"] == plain[0]["predictions"][0]["label"]
    grey = Image.open(io.BytesIO(base64.b64decode(result["heatmap"])))
    assert grey.mode == "L" and grey.size == Image.open(photo).size
    assert np.asarray(grey).max() == 255  # scaled: its strongest point is 255
    overlay = Image.open(io.BytesIO(base64.b64decode(result["heatmap_overlay"])))
    assert overlay.format == "JPEG" and max(overlay.size) <= 480


def test_a_retrain_under_load_switches_the_model_with_no_failed_request(server):
    draw_photos(server.tf_files / "data" / "triangle", "triangle", 16, seed=72)
    body = json.dumps({"instances": [{"b64": b64(server.photos[0])}]})
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    answers: list[tuple[int, list]] = []
    stop = threading.Event()

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        deadline = time.monotonic() + 180
        while not stop.is_set() and time.monotonic() < deadline:
            connection.request("POST", "/v1/models/model:predict", body=body, headers=headers)
            response = connection.getresponse()
            data = json.loads(response.read())
            classes = data["predictions"][0]["classes"] if response.status == 200 else data
            answers.append((response.status, classes))
            time.sleep(0.1)
        connection.close()

    # Steady load that leaves the training some of the two cores.
    clients = [threading.Thread(target=client) for _ in range(2)]
    for thread in clients:
        thread.start()
    try:
        in_process(
            "train",
            server.tf_files,
            *("--preset", "fast", "--no_report", "--epochs", "5", "--testing_percentage", "20"),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, metadata, _ = server.call("GET", "/v1/models/model/metadata")
            if "triangle" in metadata["metadata"]["tensorguess"]["labels"]:
                break
            time.sleep(0.2)
        seen = len(answers)
        while len(answers) < seen + 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    assert [status for status, _ in answers] == [200] * len(answers)
    old, new = [*LABELS], [*LABELS, "triangle"]
    kinds = [classes for _, classes in answers]
    assert set(map(tuple, kinds)) == {tuple(old), tuple(new)}
    # Once a request is answered by the new model, none that starts later is answered by
    # the old one (the other client's request may have been in flight).
    switch = kinds.index(new)
    assert all(classes == new for classes in kinds[switch + 2 :])
    assert "now serving the new model" in server.log.read_text()
    assert "Traceback" not in server.log.read_text()
