"""The README's three commands in real containers (TENSORGUESS_RUNTIME=docker), as a user who
is not root: the same answers as the native run on the sample, files that belong to the user,
and nothing printed that the native run does not print (no warnings).

It needs a Docker engine and the image (`bash build.sh`), so it runs only when
TENSORGUESS_DOCKER_TESTS=1: .ci/run starts an engine, builds a stand-in base image and the
image, and runs it as a step of its own, outside the suite's few minutes (docs/docker.md).
Run as root, it runs the containers as a user of its own (uid TENSORGUESS_DOCKER_TEST_UID,
default the first free one from 4242), who reaches the engine through the socket's group.
"""

from __future__ import annotations

import csv
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import ROOT, run
from tensorguess import __version__

pytestmark = pytest.mark.skipif(
    os.environ.get("TENSORGUESS_DOCKER_TESTS") != "1",
    reason="runs containers: TENSORGUESS_DOCKER_TESTS=1 with an engine and the image (.ci/run)",
)

IMAGE = f"tensorguess:{__version__}"
PHOTO = "IMG_5549.JPG"
# The container runs the same pinned TensorFlow and OpenVINO as .venv on the same CPU, so
# OpenVINO picks the same precision in both (bfloat16 with AMX, float32 without) and the two
# trainings are the same computation: here they agreed to every printed digit. What is left
# is the order of sums across threads; a container that computed in another precision or
# preprocessed otherwise would differ by 0.01 or more (README, "Speed": bfloat16 against
# float32 is allowed 0.03).
SCORE_TOLERANCE = 0.001
# What the wrappers read of the checkout when they run Docker (the version, the tag).
WRAPPER_FILES = (
    "train.sh",
    "guess.sh",
    "guessDir.sh",
    "scripts/runtime.sh",
    "src/tensorguess/__init__.py",
)


@dataclass
class World:
    """The three commands run in one place: their output, and where they wrote."""

    root: Path
    tf_files: Path
    classified: Path
    outputs: dict[str, str]


@dataclass
class Runs:
    """The same sample run natively and in containers, and the user who ran the containers."""

    native: World
    docker: World
    uid: int
    gid: int
    cache: Path


def free_uid() -> int:
    """A uid no account on this machine has, so that nothing of the test's is anyone's."""
    uid = int(os.environ.get("TENSORGUESS_DOCKER_TEST_UID", "4242"))
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
        uid += 1


def docker_socket_group() -> int | None:
    """The group that may use the engine's socket (docker), or None for a remote engine."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return None
    socket = Path(host.removeprefix("unix://"))
    if not socket.exists():
        pytest.fail(f"no Docker engine at {socket}: start dockerd (see .ci/run)")
    return socket.stat().st_gid


def chown_tree(folder: Path, uid: int, gid: int) -> None:
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, uid, gid, follow_symlinks=False)


def sample(world: Path) -> tuple[Path, Path]:
    """The repository's sample as a user has it: tf_files/data and test_data, copied."""
    tf_files = world / "tf_files"
    shutil.copytree(ROOT / "tf_files" / "data", tf_files / "data")
    return tf_files, world / "classified"


def commands(checkout: Path, tf_files: Path, photos: Path, classified: Path) -> dict[str, list]:
    """The README's three lines."""
    return {
        "train": ["bash", checkout / "train.sh", tf_files],
        "guess": ["bash", checkout / "guess.sh", tf_files, photos / PHOTO],
        "guessDir": ["bash", checkout / "guessDir.sh", tf_files, photos, classified],
    }


@pytest.fixture(scope="module")
def runs():
    """The sample trained, guessed and sorted natively, then in containers as a non-root user."""
    if shutil.which("docker") is None:
        pytest.fail("docker is not installed (apt-get install -y docker.io; see .ci/run)")
    found = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, text=True)
    if found.returncode != 0:
        reason = found.stderr.strip()
        pytest.fail(f"the image {IMAGE} is not built: bash build.sh --network host ({reason})")
    workspace = Path(tempfile.mkdtemp(prefix="tensorguess-docker-run-"))
    try:
        yield run_both(workspace)
    finally:
        shutil.rmtree(workspace)


def run_both(workspace: Path) -> Runs:
    workspace.chmod(0o755)
    photos = workspace / "test_data"
    shutil.copytree(ROOT / "test_data", photos)

    native_tf_files, native_classified = sample(workspace / "native")
    native_outputs = {}
    for name, command in commands(ROOT, native_tf_files, photos, native_classified).items():
        result = run(*command, TENSORGUESS_RUNTIME="native")
        native_outputs[name] = result.stdout + result.stderr

    docker_root = workspace / "docker"
    docker_root.mkdir()
    home = docker_root / "home"
    home.mkdir()
    docker_tf_files, docker_classified = sample(docker_root)
    prefix: list[str] = []
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        # Root would own whatever it wrote anyway: a user of its own shows what a user gets.
        uid = gid = free_uid()
        if shutil.which("setpriv") is None:
            pytest.fail("setpriv (util-linux) is needed to run the containers as a user")
        group = docker_socket_group()
        groups = f"--groups={group}" if group is not None else "--clear-groups"
        prefix = ["setpriv", f"--reuid={uid}", f"--regid={gid}", groups, "--"]
        chown_tree(docker_root, uid, gid)
    checkout = readable_checkout(prefix, workspace, uid, gid)
    environment = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TENSORGUESS_RUNTIME": "docker",
        **({"DOCKER_HOST": os.environ["DOCKER_HOST"]} if "DOCKER_HOST" in os.environ else {}),
    }
    docker_outputs = {}
    for name, command in commands(checkout, docker_tf_files, photos, docker_classified).items():
        result = subprocess.run(
            [*prefix, *map(str, command)],
            cwd=docker_root,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=900,
        )
        if result.returncode != 0:
            pytest.fail(f"{name} in Docker exited {result.returncode}:\n{result.stdout}")
        docker_outputs[name] = result.stdout
    return Runs(
        native=World(workspace / "native", native_tf_files, native_classified, native_outputs),
        docker=World(docker_root, docker_tf_files, docker_classified, docker_outputs),
        uid=uid,
        gid=gid,
        cache=home / ".cache" / "tensorguess" / "docker",
    )


def readable_checkout(prefix: list[str], workspace: Path, uid: int, gid: int) -> Path:
    """The checkout when the user can read its wrappers; else a copy of what they read (a
    checkout under /root, say)."""
    probe = subprocess.run([*prefix, "test", "-r", str(ROOT / "scripts" / "runtime.sh")])
    if probe.returncode == 0:
        return ROOT
    copy = workspace / "checkout"
    for name in WRAPPER_FILES:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, copy / name)
    chown_tree(copy, uid, gid)
    return copy


def guessed(output: str) -> list[tuple[str, float]]:
    """guess.sh's lines, `label (score = 0.12345)`, as (label, score)."""
    lines = re.findall(r"^(\S+) \(score = ([0-9.]+)\)$", output, re.MULTILINE)
    return [(label, float(score)) for label, score in lines]


def manifest(classified: Path) -> dict[str, dict[str, str]]:
    """manifest.csv's rows by the source photo's name."""
    with open(classified / "manifest.csv", newline="") as stream:
        return {Path(row["source"]).name: row for row in csv.DictReader(stream)}


def masked(output: str, world: World) -> list[str]:
    """The output's lines with the run's own folder and every number masked."""
    text = output.replace(str(world.root), "<WORLD>").replace(str(world.root.parent), "<WORKSPACE>")
    return [re.sub(r"\d+(\.\d+)?", "#", line) for line in text.splitlines()]


def test_train_in_the_container_ends_as_the_native_run(runs):
    native, docker = (
        re.findall(r"^Final test accuracy = .*$", world.outputs["train"], re.MULTILINE)
        for world in (runs.native, runs.docker)
    )
    assert len(native) == 1 and docker == native, (native, docker)
    assert (runs.docker.tf_files / "retrained_graph.pb").is_file()


def test_guess_in_the_container_gives_the_native_answer(runs):
    native, docker = guessed(runs.native.outputs["guess"]), guessed(runs.docker.outputs["guess"])
    # The README's answer: the photo shows one.
    assert len(native) == 3 and native[0][0] == "one"
    assert [label for label, _ in docker] == [label for label, _ in native]
    for (_, native_score), (_, docker_score) in zip(native, docker, strict=True):
        assert docker_score == pytest.approx(native_score, abs=SCORE_TOLERANCE)


def test_guess_dir_in_the_container_sorts_as_the_native_run(runs):
    native, docker = manifest(runs.native.classified), manifest(runs.docker.classified)
    assert len(native) == 15 and sorted(docker) == sorted(native)
    for name, row in native.items():
        assert docker[name]["label"] == row["label"], name
        for label in ("five", "one", "zero"):
            score = float(row[label])
            assert float(docker[name][label]) == pytest.approx(score, abs=SCORE_TOLERANCE)
        destination = Path(docker[name]["destination"])
        assert destination.parent == runs.docker.classified and destination.is_file()
        assert destination.name.startswith(row["label"] + "-")


def test_what_the_containers_write_belongs_to_the_user(runs):
    assert runs.uid != 0
    written = [
        path
        for folder in (runs.docker.tf_files, runs.docker.classified, runs.cache)
        for path in [folder, *folder.rglob("*")]
    ]
    # Not vacuous: the model, the sorted copies and the converted classifier are among them.
    assert runs.docker.tf_files / "retrained_labels.txt" in written
    assert runs.docker.classified / "manifest.csv" in written
    assert any(path.name == "model.xml" for path in written if path.is_relative_to(runs.cache))
    foreign = [
        f"{path} ({info.st_uid}:{info.st_gid}, {stat.filemode(info.st_mode)})"
        for path in written
        if ((info := path.lstat()).st_uid, info.st_gid) != (runs.uid, runs.gid)
    ]
    assert foreign == []


@pytest.mark.parametrize("command", ["train", "guess", "guessDir"])
def test_the_container_prints_what_the_native_run_prints_and_nothing_else(runs, command):
    output = runs.docker.outputs[command]
    # The image's build left a root-owned /tmp/intel, and OpenVINO said so on every run.
    assert "openvino_telemetry" not in output
    assert "WARNING" not in output.upper()
    native = set(masked(runs.native.outputs[command], runs.native))
    extra = [line for line in masked(output, runs.docker) if line not in native]
    assert extra == []
