"""tensorguess serve: the real server on a free loopback port, driven as its clients drive it.

One server runs for the whole module, on a private copy of the session's model, with an
API key (from TENSORGUESS_API_KEY) and small limits so that they can be reached. The
retrain test switches that server to a new model, so it comes last.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import LABELS, draw_photos, one_line_error, tensorguess, write_broken

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("selenium", reason="the test extra is not installed")

from tensorguess.bench.loadtest import predict_body, send_load  # noqa: E402
from tensorguess.cli import main  # noqa: E402
from tensorguess.cli import serve as serve_command  # noqa: E402

KEY = "correct horse battery staple"
MAX_QUEUE = 48
MAX_UPLOAD_MB = 3
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


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


def test_what_stops_the_server_from_starting_is_one_line(server, tmp_path, monkeypatch, capsys):
    taken = tensorguess("serve", server.tf_files, "--port", str(server.port), check=False)
    one_line_error(taken, f"port {server.port}", "in use", "--port")
    untrained = tensorguess("serve", tmp_path, "--port", "0", check=False)
    one_line_error(untrained, "model not found", "train.sh")
    # Without the serve extra, it says how to install it.
    monkeypatch.setattr(serve_command, "EXTRA_MODULES", ("fastapi", "no_such_module"))
    assert main(["serve", str(tmp_path)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "no_such_module missing" in line and "pip install" in line and "[serve]" in line


@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium and chromium-driver are not installed (apt-get install chromium-driver)",
)
def test_the_page_labels_a_photo_chosen_in_headless_chromium(server, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1100,800",
    ):
        options.add_argument(flag)
    best = sorted(server.guessed, key=lambda name: server.guessed[name]["predictions"][0]["score"])
    unsure, sure = best[0], best[-1]
    by_name = {path.name: path for path in server.photos}
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
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
        screenshot = tmp_path / "page.png"
        driver.save_screenshot(str(screenshot))
        print(f"screenshot: {screenshot}")
    finally:
        driver.quit()
    assert screenshot.stat().st_size > 10_000


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
        tensorguess(
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
