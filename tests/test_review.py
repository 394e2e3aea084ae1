"""tensorguess review: the real server on a free loopback port, driven as its users drive it
(a headless Chromium on the page, scripts on the API), with the files and the journal
checked after every action, and the server killed between the journal and the files."""

from __future__ import annotations

import csv
import hashlib
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import (
    CHROMEDRIVER,
    CHROMIUM,
    NO_BROWSER,
    draw_photos,
    headless_chromium,
    one_line_error,
    tensorguess,
)
from tensorguess.files import folder_lock

pytest.importorskip("fastapi", reason="the serve extra is not installed")

KEY = "review key"
CRASH = "TENSORGUESS_REVIEW_CRASH"


LISTENING = r" on http://127\.0\.0\.1:(\d+)/"


class Review:
    """`tensorguess review` running on a free loopback port, once its log says `ready`
    (by default: where it listens)."""

    def __init__(
        self,
        tf_files: Path,
        *flags: str,
        key: str | None = None,
        ready: str = LISTENING,
        **env: str,
    ):
        self.tf_files, self.key = tf_files, key
        self.log = tf_files.parent / f"review-{time.monotonic_ns()}.log"
        environment = {**os.environ, **env}
        environment.pop("TENSORGUESS_API_KEY", None)
        if key:
            environment["TENSORGUESS_API_KEY"] = key
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tensorguess", "review", str(tf_files), "--port", "0", *flags],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
            env=environment,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.process.poll() is None:
            found = re.search(ready, self.log.read_text())
            if found:
                self.port = int(found.group(1)) if found.groups() else 0
                return
            time.sleep(0.1)
        self.process.kill()
        pytest.fail(f"the review did not start:\n{self.log.read_text()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def call(self, method: str, path: str, body=None, headers=None):
        """(status, JSON answer or bytes) of one request."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = dict(headers or {})
        if self.key:
            headers.setdefault("Authorization", f"Bearer {self.key}")
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        kind = response.getheader("content-type") or ""
        return response.status, json.loads(data) if kind.startswith("application/json") else data

    def items(self) -> dict:
        """The list, once it is made."""
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            status, answer = self.call("GET", "/api/items")
            assert status == 200, answer
            if answer["checked_at"] and not answer["checking"]:
                assert answer["problem"] is None, answer["problem"]
                return answer
            time.sleep(0.2)
        pytest.fail(f"no list in time:\n{self.log.read_text()}")

    def act(self, **body):
        return self.call("POST", "/api/actions", body)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)


@pytest.fixture
def reviews():
    """Start reviews; each is stopped at the end."""
    started: list[Review] = []

    def start(*args, **kwargs) -> Review:
        started.append(Review(*args, **kwargs))
        return started[-1]

    yield start
    for review in started:
        review.stop()


def with_flipped(tf_files: Path) -> dict[str, Path]:
    """Photos drawn under the wrong label: two squares among the circles, a circle among the
    squares."""
    return {
        path.name: path
        for path in [
            *draw_photos(tf_files / "data" / "circle", "square", 2, seed=91, prefix="flipped"),
            *draw_photos(tf_files / "data" / "square", "circle", 1, seed=92, prefix="flipped"),
        ]
    }


def hand_sorted(dest: Path) -> Path:
    """DEST as `guessDir.sh --min_score` leaves it for one drawn triangle: the copy
    `unsure-circle-0.51234.jpg` and its manifest line, written by sort.py's own Manifest
    (no model to load: seconds saved where the sort itself is not what is tested)."""
    from tensorguess.classify.sort import Manifest

    (source,) = draw_photos(dest.parent / "unsorted", "triangle", 1, seed=94)
    dest.mkdir()
    copy = dest / "unsure-circle-0.51234.jpg"
    shutil.copyfile(source, copy)
    manifest = Manifest(dest, ["circle", "square"])
    manifest.add(source, copy, "circle", digest_of(source), [0.51234, 0.48766])
    manifest.close()
    return copy


def manifest_rows(dest: Path) -> list[list[str]]:
    with open(dest / "manifest.csv", newline="") as stream:
        return list(csv.reader(stream))


def contents(tf_files: Path) -> dict[str, list[str]]:
    """Each photo's content (SHA-256) and every place it is, in data/ and removed/."""
    places: dict[str, list[str]] = {}
    for folder in ("data", "removed"):
        for path in sorted((tf_files / folder).rglob("*")):
            if path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                places.setdefault(digest, []).append(str(path.relative_to(tf_files)))
    return places


def journal(tf_files: Path) -> list[dict]:
    return [json.loads(line) for line in (tf_files / "review.jsonl").read_text().splitlines()]


def assert_each_photo_once(tf_files: Path, before: dict[str, list[str]], moved: dict[str, str]):
    """Every photo there before is there once: where `moved` says (by content), or where it
    was."""
    now = contents(tf_files)
    for digest, places in before.items():
        assert now.get(digest) == [moved.get(digest, places[0])], (digest, now.get(digest))


def digest_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def label_issue_photos(listed: dict) -> dict[str, dict]:
    return {
        item["photos"][0]["id"]: item for item in listed["items"] if item["kind"] == "label_issue"
    }


# The page, in a real browser --------------------------------------------------------------


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=NO_BROWSER)
def test_the_page_relabels_removes_keeps_undoes_and_trains_again(trained_copy, reviews, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tf_files = trained_copy
    flipped = with_flipped(tf_files)
    unsorted, dest = tmp_path / "unsorted", tmp_path / "sorted"
    draw_photos(unsorted, "triangle", 2, seed=93)
    tensorguess("sort", tf_files, unsorted, dest, "--min_score", "0.99999")
    doubtful = sorted(dest.glob("unsure-*")) + sorted(dest.glob("unknown-*"))
    assert doubtful
    before = contents(tf_files)
    review = reviews(tf_files, "--sorted", str(dest))
    listed = review.items()
    issues = label_issue_photos(listed)
    squares_in_circle = sorted(
        f"data/circle/{name}" for name in flipped if "circle" in str(flipped[name].parent)
    )
    circle_in_square = next(
        f"data/square/{name}" for name in flipped if "square" in str(flipped[name].parent)
    )
    assert set(issues) == {*squares_in_circle, circle_in_square}
    assert [issues[photo]["suggested"] for photo in squares_in_circle] == ["square", "square"]
    copies = [item for item in listed["items"] if item["kind"] == "sorted"]
    assert [item["photos"][0]["name"] for item in copies] == sorted(
        (path.name for path in doubtful), key=lambda name: float(name.rsplit("-", 1)[1][:-4])
    )

    manifest = manifest_rows(dest)
    moved: dict[str, str] = {}

    def wait_for_actions(count: int) -> list[dict]:
        settle(lambda page: sum("done" in record for record in journal(tf_files)) == count)
        records = journal(tf_files)
        assert all("failed" not in record for record in records), records
        return records

    def settle(condition, seconds: float = 60):
        """Wait for `condition(driver)`; the page draws its list anew after each action."""
        return WebDriverWait(
            driver, seconds, ignored_exceptions=(StaleElementReferenceException,)
        ).until(condition)

    def tile(page, photo_id: str):
        return page.find_element(By.CSS_SELECTOR, f'.photo[data-photo="{photo_id}"]')

    def choose(photo_id: str) -> None:
        def chosen(page) -> bool:
            tile(page, photo_id).find_element(By.CLASS_NAME, "name").click()
            return "selected" in tile(page, photo_id).get_attribute("class")

        settle(chosen)

    def shown_done(photo_id: str, mark: str = "acted") -> None:
        settle(lambda page: mark in tile(page, photo_id).get_attribute("class"))

    with headless_chromium(tmp_path / "profile", 1300, 900) as driver:
        driver.get(review.url)
        settle(
            lambda page: len(page.find_elements(By.CSS_SELECTOR, "#list-label_issue .photo")) == 3
        )
        body = driver.find_element(By.TAG_NAME, "body")

        # Relabel, by key: 2 is the second label, square; the first square among the
        # circles goes to data/square/.
        first = squares_in_circle[0]
        choose(first)
        body.send_keys("2")
        records = wait_for_actions(1)
        assert records[0]["action"] == "relabel" and records[0]["photo"] == first
        relabelled = tf_files / "data/square" / Path(first).name
        assert records[1] == {"done": 1, "to": str(relabelled)}
        moved[digest_of(relabelled)] = f"data/square/{relabelled.name}"
        assert_each_photo_once(tf_files, before, moved)
        shown_done(first)

        # Remove, by key: the other square among the circles goes to removed/circle/.
        second = squares_in_circle[1]
        choose(second)
        body.send_keys("r")
        records = wait_for_actions(2)
        assert records[2]["action"] == "remove" and records[2]["photo"] == second
        removed = tf_files / "removed/circle" / Path(second).name
        assert records[3] == {"done": 2, "to": str(removed)}
        moved[digest_of(removed)] = f"removed/circle/{removed.name}"
        assert_each_photo_once(tf_files, before, moved)
        shown_done(second)

        # Keep, by click: the circle among the squares stays where it is.
        settle(
            lambda page: (
                tile(page, circle_in_square).find_element(By.CSS_SELECTOR, "button.keep").click()
                or True
            )
        )
        records = wait_for_actions(3)
        assert records[4]["action"] == "keep" and records[4]["photo"] == circle_in_square
        assert records[5] == {"done": 3, "to": None}
        assert_each_photo_once(tf_files, before, moved)
        shown_done(circle_in_square)

        # A sorted copy, relabelled with a new label typed on the page: copied into data/.
        copy = copies[0]["photos"][0]
        choose(copy["id"])
        body.send_keys("n")
        settle(lambda page: tile(page, copy["id"]).find_element(By.CLASS_NAME, "newlabel"))
        driver.switch_to.active_element.send_keys("triangle\n")
        records = wait_for_actions(4)
        source = dest / copy["name"]
        made = Path(records[7]["to"])
        assert records[6]["action"] == "relabel" and records[6]["to_label"] == "triangle"
        assert made.parent == tf_files / "data" / "triangle"
        assert made.read_bytes() == source.read_bytes() and source.is_file()
        # DEST's manifest records the person's label in a last column, all else as it was.
        rows = manifest_rows(dest)
        assert rows[0] == [*manifest[0], "reviewed_label"]
        assert [row[:-1] for row in rows] == manifest
        assert [row[-1] for row in rows[1:] if row[4] == copy["sha256"]] == ["triangle"]
        assert {row[-1] for row in rows[1:] if row[4] != copy["sha256"]} == {""}
        shown_done(copy["id"])

        # Undo, by key: the copy goes, DEST keeps its own, the manifest's label is taken back.
        body.send_keys("u")
        records = wait_for_actions(5)
        assert records[8]["action"] == "undo" and records[8]["undoes"] == 4
        assert not (tf_files / "data" / "triangle").exists() and source.is_file()
        assert manifest_rows(dest) == [manifest[0] + ["reviewed_label"]] + [
            row + [""] for row in manifest[1:]
        ]
        assert_each_photo_once(tf_files, before, moved)
        settle(lambda page: "acted" not in tile(page, copy["id"]).get_attribute("class"))
        old_accuracy = json.loads((tf_files / "tensorguess.json").read_text())["test_accuracy"]

        # Train again: train.sh's training, which holds TF_FILES' train lock meanwhile.
        driver.find_element(By.ID, "train").click()
        # Its first line (its lines are the element's title) comes once it holds the lock.
        settle(lambda page: "training (fast" in page.find_element(By.ID, "training").text)
        settle(lambda page: page.find_element(By.ID, "training").get_attribute("title"))
        refused = tensorguess("train", tf_files, "--preset", "fast", check=False)
        one_line_error(refused, "another train is running")
        settle(
            lambda page: (
                page.find_elements(By.ID, "new-accuracy")
                and "Checking" not in page.find_element(By.ID, "status").text
                and len(page.find_elements(By.CSS_SELECTOR, "#list-label_issue .photo")) == 0
            ),
            300,
        )
        shown = driver.find_element(By.ID, "accuracy").text
        assert f"(before: {100 * old_accuracy:.1f}%)" in shown, shown

        # A heat map, by key, made with the new model on the server's thread.
        choose(copy["id"])
        body.send_keys("h")
        settle(
            lambda page: page.execute_script(
                "const i = document.querySelector('.heat-image'); return i && i.naturalWidth"
            ),
            120,
        )
        screenshot = Path(os.environ.get("TENSORGUESS_REVIEW_SCREENSHOT", tmp_path / "review.png"))
        driver.save_screenshot(str(screenshot))
    # The list made again: the photos relabelled and removed are no longer suspects, the
    # kept one is not listed again, and the model was trained on what the page left.
    listed = review.items()
    assert label_issue_photos(listed) == {}
    # The journal through the API (as OpenAPI describes it), newest first.
    status, history = review.call("GET", "/api/actions")
    assert status == 200 and [entry["id"] for entry in history] == [5, 4, 3, 2, 1]
    assert history[0]["undoes"] == 4 and history[1]["undone_by"] == 5
    assert history[4]["to"] == str(relabelled) and history[3]["to"] == str(removed)
    schemas = review.call("GET", "/openapi.json")[1]["components"]["schemas"]
    assert {"Finding", "JournalEntry", "ActionRequest"} <= set(schemas)
    trained = json.loads((tf_files / "tensorguess.json").read_text())
    assert trained["labels"] == ["circle", "square"]
    assert trained["preset"] == "fast" and trained["testing_percentage"] == 20  # as before
    assert (
        trained["images"]["train"] + trained["images"]["validation"] + trained["images"]["test"]
        == len(before) - 1
    )
    assert screenshot.stat().st_size > 10_000

    # guessDir.sh reads the manifest the review wrote as its own: a new photo is sorted into
    # it (its reviewed_label empty), the others are not sorted again, no second manifest.
    review.stop()
    (new,) = draw_photos(unsorted, "circle", 1, seed=95)
    tensorguess("sort", tf_files, unsorted, dest, "--min_score", "0.99999")
    rows = manifest_rows(dest)
    assert rows[: len(manifest)] == [manifest[0] + ["reviewed_label"]] + [
        row + [""] for row in manifest[1:]
    ]
    assert len(rows) == len(manifest) + 1 and rows[-1][0] == str(new.resolve())
    assert rows[-1][-1] == "" and len(rows[-1]) == len(rows[0])
    assert sorted(path.name for path in dest.glob("manifest*.csv")) == ["manifest.csv"]


# A kill between the journal and the files ----------------------------------------------------


def test_a_review_killed_mid_action_is_finished_by_the_next(trained_copy, reviews, tmp_path):
    tf_files, dest = trained_copy, tmp_path / "sorted"
    with_flipped(tf_files)
    copy = hand_sorted(dest)
    before, manifest = contents(tf_files), manifest_rows(dest)

    def killed_starting(crash: str) -> None:
        """A review that dies (SIGKILL, as a power cut would) while it finishes what the
        last one left, before it ever listens."""
        result = tensorguess(
            "review", tf_files, "--sorted", dest, "--port", "0", check=False, **{CRASH: crash}
        )
        assert result.returncode == -9, result.stderr

    # Killed once a sorted copy's relabel is journaled, before any file is touched.
    review = reviews(tf_files, "--sorted", str(dest), **{CRASH: "journaled"})
    listed = review.items()
    photo = next(item for item in listed["items"] if item["kind"] == "sorted")["photos"][0]
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        review.act(action="relabel", photo=photo["id"], sha256=photo["sha256"], label="triangle")
    assert review.process.wait(timeout=30) == -9
    records = journal(tf_files)
    assert records[-1]["action"] == "relabel" and "done" not in records[-1]
    assert not (tf_files / "data" / "triangle").exists() and manifest_rows(dest) == manifest

    # The next one, finishing it, is killed between the copy and the manifest's line.
    killed_starting("copied")
    made = list((tf_files / "data" / "triangle").iterdir())
    assert [path.read_bytes() for path in made] == [copy.read_bytes()]
    assert manifest_rows(dest) == manifest and journal(tf_files) == records

    # The next finishes it (the copy found, not made again; the label recorded), then is
    # killed halfway through moving a training photo: under both names, one file.
    review = reviews(tf_files, "--sorted", str(dest), **{CRASH: "linked"})
    assert f"was interrupted: finished ({made[0]})" in review.log.read_text()
    assert list((tf_files / "data" / "triangle").iterdir()) == made
    assert manifest_rows(dest)[1][-1] == "triangle"
    issue = next(
        item
        for item in review.items()["items"]
        if item["kind"] == "label_issue" and item["photos"][0]["label"] == "circle"
    )
    photo = issue["photos"][0]
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        review.act(action="remove", photo=photo["id"], sha256=photo["sha256"])
    assert review.process.wait(timeout=30) == -9
    removed = tf_files / "removed" / "circle" / Path(photo["id"]).name
    assert os.path.samefile(tf_files / photo["id"], removed)

    # The next finishes that too, before it listens.
    finished = re.escape(f"interrupted: finished ({removed})")
    reviews(tf_files, "--sorted", str(dest), ready=finished).stop()
    assert_each_photo_once(tf_files, before, {photo["sha256"]: str(removed.relative_to(tf_files))})
    assert contents(tf_files)[digest_of(copy)] == [str(made[0].relative_to(tf_files))]
    # The journal: each action once, each done once, none failed.
    records = journal(tf_files)
    actions = [record["id"] for record in records if "id" in record]
    done = [record["done"] for record in records if "done" in record]
    assert actions == done == [1, 2]
    assert all("failed" not in record for record in records)


# Bad requests --------------------------------------------------------------------------------


def test_bad_requests_get_a_4xx_and_one_line_and_change_nothing(trained_copy, reviews, tmp_path):
    tf_files, dest = trained_copy, tmp_path / "sorted"
    with_flipped(tf_files)
    hand_sorted(dest)
    review = reviews(tf_files, "--sorted", str(dest), key=KEY)
    listed = review.items()
    issues = [item for item in listed["items"] if item["kind"] == "label_issue"]
    photo, other, third = (item["photos"][0] for item in issues)
    (copy,) = (item["photos"][0] for item in listed["items"] if item["kind"] == "sorted")
    # The server's terminal holds its own lines only (TensorFlow's start-up notices muted).
    for line in review.log.read_text().splitlines():
        assert line.startswith(("Reviewing ", "tensorguess review: ")), line
    before, manifest = contents(tf_files), manifest_rows(dest)

    def refused(status, answer, code, *words):
        assert status == code, answer
        assert set(answer) == {"error"} and "\n" not in answer["error"]
        for word in words:
            assert word in answer["error"], answer["error"]

    refused(
        *review.act(action="remove", photo="data/circle/nothing.jpg", sha256="0"), 404, "no photo"
    )
    refused(*review.act(action="remove", photo="../../etc/passwd", sha256="0"), 404, "no photo")
    for label in ("a/b", "..\\up", ".hidden", "", "line\nbreak"):
        answer = review.act(
            action="relabel", photo=photo["id"], sha256=photo["sha256"], label=label
        )
        refused(*answer, 400, "label")
    refused(
        *review.act(action="relabel", photo=photo["id"], sha256="0" * 64, label="x"), 409, "reload"
    )
    refused(*review.act(action="jump", photo=photo["id"], sha256=photo["sha256"]), 400, "action")
    refused(*review.call("POST", "/api/actions", b"photo=x", {"Content-Type": "text/plain"}), 415)
    refused(
        *review.call("GET", "/api/items", headers={"Authorization": "Bearer wrong"}), 401, "key"
    )
    refused(*review.call("GET", "/api/items", headers={"Host": "evil.example:80"}), 421)
    refused(*review.call("POST", "/api/undo", {}), 409, "nothing to undo")
    refused(*review.call("POST", "/api/undo", {"action": 99}), 404, "no action 99")
    # Labels given by labels.csv (multi-label) are not the folders': moving photos is refused.
    (tf_files / "labels.csv").write_text("image,labels\n")
    answer = review.act(action="remove", photo=photo["id"], sha256=photo["sha256"])
    refused(*answer, 400, "labels.csv")
    (tf_files / "labels.csv").unlink()
    refused(*review.call("GET", "/api/photos/thumbnail?photo=data/circle/x.jpg"), 404, "no photo")
    status, thumbnail = review.call("GET", "/api/photos/thumbnail?photo=" + photo["id"])
    assert status == 200 and thumbnail[:3] == b"\xff\xd8\xff"  # a JPEG
    assert contents(tf_files) == before

    # A guessDir.sh sorting into DEST (its lock held): its copies are left alone meanwhile.
    with folder_lock(dest, "sort"):
        answer = review.act(
            action="relabel", photo=copy["id"], sha256=copy["sha256"], label="triangle"
        )
        refused(*answer, 409, "another sort is running")
    assert contents(tf_files) == before and manifest_rows(dest) == manifest
    assert not (tf_files / "review.jsonl").read_text()

    # A train.sh running: the page's training is refused at once, not started to fail.
    with folder_lock(tf_files, "train"):
        refused(*review.call("POST", "/api/train", {}), 409, "another train is running")
    assert review.call("GET", "/api/train")[1]["status"] == "idle"

    # Changed on disk since it was listed: refused, and left as it is.
    changed = tf_files / other["id"]
    changed.write_bytes(changed.read_bytes() + b"\0")
    refused(*review.act(action="remove", photo=other["id"], sha256=other["sha256"]), 409, "changed")
    assert changed.is_file()

    # Two pages acting on one photo at once: one wins, the other hears why.
    answers = []
    requests = [
        dict(action="relabel", photo=photo["id"], sha256=photo["sha256"], label="square"),
        dict(action="remove", photo=photo["id"], sha256=photo["sha256"]),
    ]
    threads = [
        threading.Thread(target=lambda r=r: answers.append(review.act(**r))) for r in requests
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(status for status, _ in answers) == [200, 409]
    refused(*next(answer for answer in answers if answer[0] == 409), 409, "already")
    assert len([path for path in contents(tf_files)[photo["sha256"]]]) == 1

    # A training running (train.sh holds TF_FILES' lock): photos stay where they are.
    with folder_lock(tf_files, "train"):
        refused(
            *review.act(action="remove", photo=third["id"], sha256=third["sha256"]), 409, "train"
        )
    assert (tf_files / third["id"]).is_file()


def test_review_listens_beyond_loopback_only_with_an_api_key(tmp_path):
    (tmp_path / "data").mkdir()
    result = tensorguess(
        "review", tmp_path, "--host", "0.0.0.0", "--port", "0", check=False, TENSORGUESS_API_KEY=""
    )
    assert result.returncode == 2  # an empty key is a bad command line
    environment = {key: value for key, value in os.environ.items() if key != "TENSORGUESS_API_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "tensorguess", "review", str(tmp_path), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    one_line_error(result, "refusing to listen beyond this machine without an API key")
    shutil.rmtree(tmp_path / "data")


def test_a_relabelled_photo_never_replaces_one_of_the_same_name(tmp_path):
    """Moving data/circle/x.jpg into a data/square/ that holds another x.jpg keeps both: the
    moved one takes the next counted name, and the move finished again (a replay after a
    kill) finds it there rather than moving anything twice."""
    from tensorguess.review.moves import complete_move

    source = tmp_path / "data" / "circle" / "x.jpg"
    there = tmp_path / "data" / "square" / "x.jpg"
    for path, data in ((source, b"the circle photo"), (there, b"the square photo")):
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
    digest = hashlib.sha256(b"the circle photo").hexdigest()
    moved = complete_move(source, there.parent, "x.jpg", digest)
    assert moved == there.with_name("x-1.jpg") and moved.read_bytes() == b"the circle photo"
    assert there.read_bytes() == b"the square photo" and not source.exists()
    assert complete_move(source, there.parent, "x.jpg", digest) == moved
    assert sorted(path.name for path in there.parent.iterdir()) == ["x-1.jpg", "x.jpg"]
