"""Bulk work on a Ray cluster: the connection (workers.py holds what runs on it).

`--ray [ADDRESS]` moves the expensive part of a run, decoding photos and running the network
on them, onto Ray workers, and keeps everything that touches the user's files where it was:

- The driver (the machine where guessDir.sh or train.sh runs) does what a local run does,
  with the same code: it lists SRC, hashes every photo, holds DEST's lock, makes the verified
  copies under free names, appends the manifest, adopts a killed run's orphans (sort.py), and
  writes the feature cache under the same keys (features/bottlenecks.py). Every promise of
  sort.py's specification holds because nothing else writes into DEST or the cache.
- The workers are Ray Data actors (workers.py). They read the photos at the driver's
  absolute paths, so SRC (and TF_FILES/data) must be on storage every node mounts at the
  same path. The model travels to them through Ray's object store: TF_FILES, DEST and the
  cache need not be shared.
- Results stream back in the order the paths went out, so a sort names its copies exactly as
  a local sort would, and features are matched to their photos by position.
- A worker process that dies is started again and its batch retried (`RESTARTS` times at
  most, or $TENSORGUESS_RAY_RESTARTS); one that keeps dying, an unreachable address, or a
  cluster that fails ends the run with one line. The driver had only ever written whole,
  verified copies, each listed by a complete manifest line (or whole cache entries), so
  nothing is lost or half-written, and a rerun finishes the job.
- No address (and no $TENSORGUESS_RAY_ADDRESS): a local Ray runtime on this machine, listening
  on 127.0.0.1 only, for the length of the run.

Ray is an optional extra (`pip install 'tensorguess[ray]'`): it is imported here, and only
when `--ray` is given.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import socket
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from tensorguess.errors import TensorguessError, first_line

ADDRESS_VARIABLE = "TENSORGUESS_RAY_ADDRESS"
# A worker that dies is restarted, and its batch retried, this many times (or as many as
# $TENSORGUESS_RAY_RESTARTS says); one that keeps dying (a photo that crashes a decoder,
# memory it cannot get) ends the run in one line.
RESTARTS = 3
RESTARTS_VARIABLE = "TENSORGUESS_RAY_RESTARTS"
# How long the driver waits for a TCP answer from ADDRESS before calling it unreachable.
CONNECT_TIMEOUT_S = 5.0
# Ray Data tasks per batch of paths, at most; more blocks only cost scheduling.
MAX_BLOCKS = 10_000
SHARED_STORAGE = "(a shared filesystem mounted at the same path on every node; docs/cluster.md)"


@dataclass(frozen=True)
class RaySettings:
    """`--ray [ADDRESS]` and `--ray_workers N`: where the bulk work runs, and on how many actors.

    An empty address means $TENSORGUESS_RAY_ADDRESS, or else a local Ray runtime. `workers`
    None means one per GPU of the cluster, or one per node when it has no GPU.
    """

    address: str = ""
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise TensorguessError(f"--ray_workers must be at least 1, got {self.workers}")


@dataclass(frozen=True)
class WorkerLayout:
    """How many actors run, and the CPUs and GPUs each one reserves."""

    workers: int
    cpus: float
    gpus: float


def worker_layout(nodes: Sequence[dict[str, float]], wanted: int | None) -> WorkerLayout:
    """Actors for `nodes` (each node's resources: {"CPU": 16, "GPU": 2}).

    By default one actor per GPU, or one per node without GPUs; an actor uses every core of
    its node (decoding threads, the engine's threads), so more than one per node only shares
    them. Each reserves at most what the smallest node has, and all of them together at
    most what the cluster has, so they can all be placed at once.
    """
    cpu_nodes = [node.get("CPU", 0.0) for node in nodes if node.get("CPU", 0.0) > 0]
    if not cpu_nodes:
        raise TensorguessError("the Ray cluster has no node with a CPU to run workers on")
    gpus = sum(node.get("GPU", 0.0) for node in nodes)
    workers = wanted or (int(gpus) if gpus >= 1 else len(cpu_nodes))
    cpus = min(min(cpu_nodes), sum(cpu_nodes) / workers)
    return WorkerLayout(workers, cpus, min(1.0, gpus / workers) if gpus >= 1 else 0.0)


def import_ray():
    """The `ray` module, or one line saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data needs the extra's pyarrow and pandas too)
    except ImportError as error:
        raise TensorguessError(
            f"--ray needs Ray ({error}): run the command through train.sh or guessDir.sh, "
            "which install it on first use, or: pip install 'tensorguess[ray]'"
        ) from None
    return ray


def check_reachable(address: str) -> None:
    """Refuse at once an ADDRESS where nothing listens (Ray itself retries for a minute)."""
    if address == "auto":
        return
    host_port = address.split("://", 1)[-1].rstrip("/")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise TensorguessError(
            f"--ray {address}: not a Ray address; give HOST:PORT of the head node "
            "(ray start --head prints it), ray://HOST:PORT, or auto"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise TensorguessError(
            f"no Ray cluster answers at {address} ({error.strerror or error}): start one "
            "there with `ray start --head`, or give --ray without an address for a local "
            "Ray runtime"
        ) from None


class RayCluster:
    """The Ray cluster of `settings`, connected when first needed and left on `close`.

    Ray's presence and the address are checked when it is made, before any slow work;
    the connection waits for the first batch of work, so a rerun with nothing left to do
    starts no Ray at all. `after_failure` ends the line said when the cluster fails.
    """

    def __init__(self, settings: RaySettings, after_failure: str = "run it again") -> None:
        self.settings = settings
        self.address = settings.address or os.environ.get(ADDRESS_VARIABLE, "")
        self.after_failure = after_failure
        # Before Ray's first import: it reads these once. Ray's own log lines (a worker
        # restarted, a warning about its internals) stay in its log files; what the user
        # must know, we say in one line.
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        if not self.address:
            # A local runtime listens on 127.0.0.1 only (Ray's single-machine mode), and
            # sends no usage statistics.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            if "RAY_AUTH_MODE" not in os.environ:
                # Token authentication, as Ray gives a local cluster, but with a token of
                # this run only: Ray would write one to ~/.ray/auth_token, after which the
                # user's own `ray start --head` demands a token that `ray start --address`
                # does not send.
                os.environ["RAY_AUTH_MODE"] = "token"
                os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
        self.restarts = _restarts()
        self._ray = import_ray()
        if self.address:
            check_reachable(self.address)
        self._connected = False

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(self, *exception) -> None:
        self.close()

    def close(self) -> None:
        """Leave the cluster (a local runtime stops)."""
        if self._connected:
            self._ray.shutdown()
            self._connected = False

    def _connect(self):
        ray = self._ray
        if self._connected:
            return ray
        options = {"logging_level": logging.ERROR, "log_to_driver": False}
        try:
            with _quiet_standard_error():
                if self.address:
                    ray.init(address=self.address, **options)
                else:
                    ray.init(address="local", include_dashboard=False, **options)
        except Exception as error:  # noqa: BLE001  (Ray raises many types for one failure)
            where = self.address or "a local Ray runtime"
            raise TensorguessError(f"cannot start Ray at {where} ({first_line(error)})") from None
        self._connected = True
        for name in ("ray", "ray.data"):  # its failures become our one line
            logging.getLogger(name).setLevel(logging.CRITICAL)
        _keep_standard_output_for_data(ray)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the driver shows its own
        context.print_on_execution_start = False
        context.execution_options.preserve_order = True
        return ray

    def map(
        self, worker: type, arguments: dict, paths: Sequence[str], batch_size: int
    ) -> Iterator[dict[str, np.ndarray]]:
        """Run `worker(**arguments)` actors over `paths` (absolute), batch by batch, in order.

        Yields each result batch; a worker's `worker_problem` becomes one line here.
        """
        ray = self._connect()
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        layout = worker_layout(nodes, self.settings.workers)
        blocks = max(1, min(MAX_BLOCKS, -(-len(paths) // batch_size)))
        rows = ray.data.from_items([{"path": path} for path in paths], override_num_blocks=blocks)
        with warnings.catch_warnings():
            # Ray 2.64 drops ray_remote_args_fn, the only way to bound the restarts (pyproject
            # keeps Ray below it); without it a worker that keeps dying would loop forever.
            warnings.simplefilter("ignore", DeprecationWarning)
            results = rows.map_batches(
                worker,
                fn_constructor_kwargs=arguments,
                batch_size=batch_size,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=layout.workers),
                num_cpus=layout.cpus,
                num_gpus=layout.gpus or None,
                ray_remote_args_fn=functools.partial(_fault_tolerance, self.restarts),
            )
        try:
            for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
                problems = [text for text in batch["worker_problem"] if text]
                if problems:
                    raise TensorguessError(problems[0])
                yield batch
        except ray.exceptions.RayError as error:
            raise TensorguessError(
                f"the Ray cluster failed ({_summary(error)}); {self.after_failure}"
            ) from None

    def share(self, value):
        """`value` in Ray's object store, for the actors to fetch (wrapped: Ray would
        otherwise resolve it into each actor's constructor arguments)."""
        return Shared(self._connect().put(value))


@dataclass(frozen=True)
class Shared:
    """A reference to an object in Ray's object store."""

    reference: object

    def get(self):
        """The object."""
        import ray

        return ray.get(self.reference)


def _keep_standard_output_for_data(ray) -> None:
    """Ray prints the cluster's messages to the driver (a worker died, its batch is retried)
    on standard output, which holds `--json` data: send them to Ray's log instead. Ray has no
    switch for it; a Ray without this hook prints them as before."""
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    if worker is not None and hasattr(worker, "print_to_stdstream"):
        log = logging.getLogger("ray")
        worker.print_to_stdstream = lambda data, **_: log.warning("%s", data.get("lines"))


@contextmanager
def _quiet_standard_error() -> Iterator[None]:
    """Standard error (the file descriptor) to /dev/null for a moment: Ray's native code
    announces its log level there when it starts, whatever that level is."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _fault_tolerance(restarts: int) -> dict:
    """Actor options: restart a dead worker and retry its batch, a few times."""
    return {"max_restarts": restarts, "max_task_retries": restarts}


def _restarts() -> int:
    text = os.environ.get(RESTARTS_VARIABLE, "").strip()
    if not text:
        return RESTARTS
    if not text.isdigit():
        raise TensorguessError(f"${RESTARTS_VARIABLE} must be a whole number, got {text!r}")
    return int(text)


def _summary(error: BaseException) -> str:
    """The line of a Ray error that says what happened: a worker's own exception comes last."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[-1] if lines else type(error).__name__
    return text[:300]
