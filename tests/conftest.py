"""Fixtures only (the helpers the tests share are in helpers.py): a hermetic cache, models
trained once per run, and the order in which pytest-xdist hands out the test files."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import SUPERHEROES, make_tf_files, wrapper
from tensorguess.quiet import set_tensorflow_environment

# TensorFlow as the commands start it (oneDNN's kernels on), for the test files that import
# it themselves at collection and the processes they start.
set_tensorflow_environment()

# test.sh runs two workers, each taking a whole file at a time in the order collected: the
# slowest files go first, so that none of them is left to start last while the other worker
# has nothing to do (longest first, roughly by their seconds on the 2-core machine; the
# rest follow in their usual order). The first two need no model of another file's: neither
# worker waits for the other's training at the start.
SLOWEST_FIRST = (
    "test_export.py",
    "test_main_commands.py",
    "test_cluster.py",
    "test_reliability.py",
    "test_review.py",
    "test_serve.py",
    "test_bench.py",
    "test_multilabel.py",
    "test_workflow.py",
    "test_train.py",
    "test_doctor.py",
    "test_engines.py",
    "test_explain.py",
    "test_quantize.py",
    "test_sort.py",
    "test_predict.py",
    "test_fine_tune.py",
    "test_evaluate.py",
)


def pytest_configure(config: pytest.Config) -> None:
    """Keep SLOWEST_FIRST under --dist loadfile (xdist would put the files with most tests
    first instead)."""
    if getattr(config.option, "dist", "no") == "loadfile":
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files of SLOWEST_FIRST first, in that order; each file's tests in its own order."""
    rank = {name: index for index, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session", autouse=True)
def hermetic_cache(tmp_path_factory):
    """One cache for the whole session, not the user's ~/.cache: the backbone is converted
    once, and every test after the first finds it there."""
    os.environ["TENSORGUESS_CACHE_DIR"] = str(tmp_path_factory.mktemp("backbone-cache"))
    os.environ.pop("TENSORGUESS_BUILTIN_CACHE_DIR", None)
    os.environ["TENSORGUESS_RUNTIME"] = "native"
    os.environ.pop("TENSORGUESS_ENGINE", None)
    os.environ.pop("TENSORGUESS_WRAPPER", None)
    yield


def trained_once(
    tmp_path_factory, name: str, train: Callable[[Path], subprocess.CompletedProcess]
) -> tuple[Path, subprocess.CompletedProcess]:
    """`train(tf_files)` run once for the whole run, under `name`: its tf_files and output.

    Under pytest-xdist (test.sh), the workers' folders share a parent: the first worker to
    get here trains, the other waits for it and reuses the model (read-only, as the tests
    use these models; a test that changes one works on a copy).
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / name
    tf_files, record = folder / "tf_files", folder / "train.json"
    with open(root / f"{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not record.exists():
            shutil.rmtree(folder, ignore_errors=True)
            tf_files.mkdir(parents=True)
            result = train(tf_files)
            arguments = [str(argument) for argument in result.args]
            record.write_text(json.dumps([arguments, result.stdout, result.stderr]))
    arguments, stdout, stderr = json.loads(record.read_text())
    return tf_files, subprocess.CompletedProcess(arguments, 0, stdout, stderr)


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A tf_files folder trained once through train.sh (the head-only preset: these tests
    are about the files and commands, not about fine-tuning), with that run's output."""

    def train(tf_files: Path) -> subprocess.CompletedProcess:
        make_tf_files(tf_files)
        return wrapper("train.sh", tf_files, "--testing_percentage", "20", "--preset", "fast")

    return trained_once(tmp_path_factory, "shapes", train)


@pytest.fixture
def trained_copy(trained, tmp_path) -> Path:
    """A private copy of the trained tf_files, for tests that change it."""
    return Path(shutil.copytree(trained[0], tmp_path / "tf_files", symlinks=True))


@pytest.fixture(scope="session")
def superheroes_model(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """Trained once on ../shared's superheroes/train (the head-only preset on the smaller
    backbone, to keep the suite quick), read in place through symlinked label folders, with
    that run's output. Tests using it skip without ../shared."""
    if not SUPERHEROES.is_dir():
        pytest.skip("../shared/datasets/superheroes is not present")

    def train(tf_files: Path) -> subprocess.CompletedProcess:
        (tf_files / "data").mkdir()
        for label in (SUPERHEROES / "train").iterdir():
            (tf_files / "data" / label.name).symlink_to(label, target_is_directory=True)
        # The head-only preset: 22 s rather than 59 s with three epochs of fine-tuning,
        # and 98.4% rather than 100% on its 62 test photos. The files are the same
        # kind (one frozen graph of backbone and head); fine-tuning is test_fine_tune's.
        # No report.html: no test reads this one's (the shapes model's is test_report's).
        lite0 = ("--backbone", "efficientnet_lite0")
        return wrapper("train.sh", tf_files, *lite0, "--preset", "fast", "--no_report")

    return trained_once(tmp_path_factory, "superheroes", train)
