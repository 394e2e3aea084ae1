"""Bulk sorting and features on a real Ray cluster: a head and a second node, each with 1 CPU,
started with `ray start` on this machine, and the commands run against it as a user runs them.

Ray binds its servers to the machine's network address as soon as a cluster has a second
node, so the two nodes, and every command that talks to them, run in a network namespace of
their own whose only interface is loopback: Ray listens on 127.0.0.1, and nothing of it can
be reached from outside. The namespace's processes are exactly the ones these tests started;
they are stopped by their ids at the end (never `ray stop`, which stops every Ray of the
machine).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import draw_photos, one_line_error, run, tensorguess

pytest.importorskip("ray", reason="the ray extra is part of the test extra: bash test.sh")

# Keeps its network namespace alive, with loopback up, until its standard input closes.
NAMESPACE_HOLDER = """
import fcntl, socket, struct, sys
request = struct.pack("16sH14s", b"lo", 0, b"")
flags = struct.unpack("16sH14s", fcntl.ioctl(socket.socket(), 0x8913, request))[1]  # SIOCGIFFLAGS
fcntl.ioctl(socket.socket(), 0x8914, struct.pack("16sH14s", b"lo", flags | 1, b""))  # IFF_UP
print("ready", flush=True)
sys.stdin.read()
"""
# The tensorguess command line that also says whether it imported Ray (the default path must not).
WITHOUT_RAY = (
    "import sys; from tensorguess.cli import main; code = main(sys.argv[1:]); "
    "print('ray imported' if 'ray' in sys.modules else 'ray not imported', file=sys.stderr); "
    "sys.exit(code)"
)
PHOTOS = 100  # of each shape: a few hundred photos to sort


class LoopbackCluster:
    """A two-node Ray cluster in a network namespace of its own.

    The nodes start in the background (the head, then the second node), while the tests
    prepare their photos; the first use waits for them.
    """

    def __init__(self, root: Path) -> None:
        self.holder = subprocess.Popen(
            ["unshare", "--net", sys.executable, "-c", NAMESPACE_HOLDER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.holder.stdout.readline().strip() == "ready"
        self.namespace = os.readlink(f"/proc/{self.holder.pid}/ns/net")
        self.enter = ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net"]
        self.address = "127.0.0.1:6379"  # the namespace is ours: the port is free
        # No one else can reach the namespace: no token (whatever ~/.ray holds), no statistics.
        self.environment = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        self.problem = ""
        self.starting = threading.Thread(target=self._start, args=(root / "ray",))
        self.starting.start()

    def _start(self, temp: Path) -> None:
        ray = str(Path(sys.executable).with_name("ray"))
        common = ["--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats"]
        head = ["--head", "--port", "6379", "--temp-dir", str(temp), "--include-dashboard", "false"]
        for arguments in (head, ["--address", self.address]):
            node = subprocess.run(
                [*self.enter, ray, "start", *arguments, *common],
                capture_output=True,
                text=True,
                env={**os.environ, **self.environment},
                timeout=300,
            )
            if node.returncode != 0:
                self.problem = f"ray start {' '.join(arguments)}: {node.stdout}{node.stderr}"
                return

    def wait(self) -> None:
        """Until both nodes have started."""
        self.starting.join()
        assert not self.problem, self.problem

    def run_here(self, *command, **kwargs) -> subprocess.CompletedProcess:
        """Run a command inside the cluster's network namespace."""
        self.wait()
        return run(*self.enter, *command, **{**self.environment, **kwargs})

    def tensorguess(self, *arguments, **kwargs) -> subprocess.CompletedProcess:
        """The tensorguess command line, inside the namespace."""
        return self.run_here(sys.executable, "-m", "tensorguess", *arguments, **kwargs)

    def popen_tensorguess(self, *arguments, **env) -> subprocess.Popen:
        """The tensorguess command line, started inside the namespace."""
        self.wait()
        command = [*self.enter, sys.executable, "-m", "tensorguess", *map(str, arguments)]
        return subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **self.environment, **env},
        )

    def processes(self, prefix: str = "") -> list[int]:
        """The ids of the processes in the namespace (whose command line starts with `prefix`)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == self.holder.pid:
                continue
            try:
                if os.readlink(entry / "ns" / "net") != self.namespace:
                    continue
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue  # ended meanwhile
            if command.startswith(prefix):
                found.append(int(entry.name))
        return found

    def kill_a_worker(self) -> int | None:
        """Kill one Ray Data actor's process, as the kernel's OOM killer would."""
        for pid in self.processes("ray::MapWorker"):
            try:
                os.kill(pid, signal.SIGKILL)
                return pid
            except ProcessLookupError:
                continue
        return None

    def stop(self) -> None:
        """End every process of the namespace, by id, then the namespace (its temporary
        folder goes with the test's)."""
        self.starting.join()
        for _ in range(3):  # a process may start another while they end
            for pid in self.processes():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        self.holder.stdin.close()
        self.holder.wait(10)


@pytest.fixture(scope="module")
def cluster():
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("needs unshare and nsenter (util-linux) to keep Ray on loopback")
    if subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs a network namespace of its own (root) to keep Ray on loopback")
    # A short folder: Ray's socket paths under it must stay within AF_UNIX's 107 bytes, which
    # pytest's own temporary folders (deeper still under xdist) can exceed.
    folder = Path(tempfile.mkdtemp(prefix="tg-ray-"))
    started = LoopbackCluster(folder)
    try:
        yield started
    finally:
        started.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A few hundred drawn photos to sort."""
    folder = tmp_path_factory.mktemp("unsorted")
    for shape in ("circle", "square"):
        draw_photos(folder, shape, PHOTOS, seed=5)
    return folder


@pytest.fixture(scope="module")
def local_sort(cluster, trained, photos, tmp_path_factory):
    """The local guessDir's result on `photos`, float32, and its standard error (sorted while
    the cluster starts)."""
    destination = tmp_path_factory.mktemp("sorted-here") / "sorted"
    result = run(
        sys.executable, "-c", WITHOUT_RAY, "sort", trained[0], photos, destination,
        "--engine", "openvino-f32",
    )  # fmt: skip
    return destination, result


def manifest_rows(destination: Path) -> dict[str, list[str]]:
    """DEST's manifest: {source: row}, each source once."""
    with open(destination / "manifest.csv", newline="") as stream:
        rows = list(csv.reader(stream))[1:]
    by_source = {row[0]: row for row in rows}
    assert len(by_source) == len(rows), "a source is listed twice"
    return by_source


def assert_whole(destination: Path) -> dict[str, list[str]]:
    """What a sort promises of DEST, however it ended: each file listed once, each listed
    copy there, no temporaries. Returns the manifest's rows."""
    rows = manifest_rows(destination)
    listed = {Path(row[1]).name for row in rows.values()}
    assert len(listed) == len(rows)
    files = {entry.name for entry in destination.iterdir() if entry.name != "manifest.csv"}
    assert files - {".tensorguess.lock"} == listed
    return rows


def test_the_local_sort_never_imports_ray(local_sort):
    destination, result = local_sort
    assert "ray not imported" in result.stderr
    assert len(manifest_rows(destination)) == 2 * PHOTOS


def sort_killing_a_worker(cluster, *arguments, **env) -> tuple[subprocess.Popen, int, int]:
    """Run `sort *arguments` on the cluster and kill one of its workers mid-run, once the
    first copies are in DEST: (the finished command, the copies by then, the killed id)."""
    destination = Path(arguments[2])
    command = cluster.popen_tensorguess("sort", *arguments, "--ray", cluster.address, **env)
    killed = copied = None
    while command.poll() is None and killed is None:
        copied = len(list(destination.glob("*-0.*"))) if destination.is_dir() else 0
        if copied >= 16:
            killed = cluster.kill_a_worker()
        time.sleep(0.05)
    command.stdout_text, command.stderr_text = command.communicate(timeout=300)
    assert killed is not None and copied < 2 * PHOTOS, "the run ended before a worker was killed"
    return command, copied, killed


def test_the_bulk_sort_equals_the_local_sort_even_when_a_worker_is_killed(
    cluster, trained, photos, local_sort, tmp_path
):
    """The dead worker is replaced and its batch retried: every photo is sorted exactly
    once, under the name, label and scores the local sort gave it."""
    destination = tmp_path / "sorted"
    command, _, _ = sort_killing_a_worker(
        cluster, trained[0], photos, destination, "--engine", "openvino-f32", "--json",
        "--batch_size", "16",
    )  # fmt: skip
    assert command.returncode == 0, command.stderr_text
    summary = json.loads(command.stdout_text)  # standard output holds the JSON alone
    assert len(summary["sorted"]) == 2 * PHOTOS
    here, there = manifest_rows(local_sort[0]), assert_whole(destination)
    assert here.keys() == there.keys()
    for source, row in here.items():
        other = there[source]
        # Same name in DEST (results come back in order), label, digest; scores within 1e-4.
        assert [Path(row[1]).name, row[2], row[4]] == [Path(other[1]).name, other[2], other[4]]
        scores = np.array([row[3], *row[5:]], float), np.array([other[3], *other[5:]], float)
        assert np.abs(scores[0] - scores[1]).max() <= 1e-4


def test_a_worker_that_dies_for_good_is_one_line_and_dest_stays_whole(
    cluster, trained, photos, tmp_path
):
    destination = tmp_path / "sorted"
    command, copied, killed = sort_killing_a_worker(
        cluster, trained[0], photos, destination, "--batch_size", "16",
        TENSORGUESS_RAY_RESTARTS="0",
    )  # fmt: skip
    one_line_error(
        subprocess.CompletedProcess([], command.returncode, "", command.stderr_text),
        "the Ray cluster failed",
        "nothing is lost",
        "run it again",
    )
    rows = assert_whole(destination)
    assert copied <= len(rows) < 2 * PHOTOS
    for row in rows.values():  # each listed copy is whole: the source's bytes
        assert Path(row[1]).read_bytes() == Path(row[0]).read_bytes()


def test_train_on_the_cluster_fills_the_cache_with_the_same_files(cluster, trained, tmp_path):
    tf_files = tmp_path / "tf_files"
    shutil.copytree(trained[0] / "data", tf_files / "data")
    cache = tmp_path / "bottlenecks"
    result = cluster.tensorguess(
        "train", tf_files, "--preset", "fast", "--no_report", "--testing_percentage", "20",
        "--bottleneck_dir", cache, "--ray", cluster.address,
    )  # fmt: skip
    photos = len(list((tf_files / "data").glob("*/*")))
    assert f"Features: {photos} computed, 0 from cache" in result.stdout
    here = trained[0] / "bottlenecks"
    local = sorted(path.relative_to(here) for path in here.rglob("*.npy"))
    assert len(local) == photos
    assert sorted(path.relative_to(cache) for path in cache.rglob("*.npy")) == local
    for name in local:  # the same engine, in the same precision: the same features
        assert np.allclose(np.load(here / name), np.load(cache / name), atol=1e-3)


def test_an_unreachable_address_is_one_line_before_anything_is_done(trained, photos, tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    destination = tmp_path / "sorted"
    result = tensorguess("sort", trained[0], photos, destination, "--ray", address, check=False)
    one_line_error(result, f"no Ray cluster answers at {address}", "ray start --head")
    assert not destination.exists()


def test_a_src_the_workers_cannot_see_is_one_line_and_nothing_is_copied(
    cluster, trained, photos, tmp_path
):
    """The driver sees SRC (on a mount of its own), the workers do not: not shared storage."""
    mount = tmp_path / "driver only"
    mount.mkdir()
    source = mount / "unsorted"
    destination = tmp_path / "sorted"
    script = 'mount -t tmpfs tmpfs "$1" && mkdir "$2" && cp "$3"/circle_5_00* "$2" && shift 3'
    script += ' && exec "$@"'
    result = cluster.run_here(
        "unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", mount, source,
        photos, sys.executable, "-m", "tensorguess", "sort", trained[0], source, destination,
        "--ray", cluster.address, check=False,
    )  # fmt: skip
    one_line_error(result, f"{source}: not found by the Ray worker", "same path")
    assert assert_whole(destination) == {}


def test_ray_workers_without_ray_is_a_usage_error(trained, photos, tmp_path):
    result = tensorguess("sort", trained[0], photos, tmp_path, "--ray_workers", "2", check=False)
    assert result.returncode == 2 and "--ray_workers needs --ray" in result.stderr


def test_one_worker_per_gpu_or_per_node_each_fitting_the_smallest_node():
    from tensorguess.classify.cluster.connection import WorkerLayout, worker_layout

    two_cpus, eight_cpus = {"CPU": 2.0, "memory": 1e9}, {"CPU": 8.0}
    assert worker_layout([two_cpus], None) == WorkerLayout(1, 2.0, 0.0)
    assert worker_layout([two_cpus], 2) == WorkerLayout(2, 1.0, 0.0)
    assert worker_layout([two_cpus, eight_cpus], None) == WorkerLayout(2, 2.0, 0.0)
    # A head node kept free of work (ray start --head --num-cpus 0) runs no worker.
    assert worker_layout([{"CPU": 0.0}, eight_cpus], None) == WorkerLayout(1, 8.0, 0.0)
    gpus = {"CPU": 16.0, "GPU": 2.0}
    assert worker_layout([gpus, gpus], None) == WorkerLayout(4, 8.0, 1.0)
    assert worker_layout([gpus], 4) == WorkerLayout(4, 4.0, 0.5)
