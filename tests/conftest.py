"""Fixtures only (the helpers the tests share are in helpers.py): a hermetic cache and a
model trained once per session."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import SUPERHEROES, make_tf_files, wrapper


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


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A tf_files folder trained once through train.sh (the head-only preset: these tests
    are about the files and commands, not about fine-tuning), with that run's output."""
    tf_files = make_tf_files(tmp_path_factory.mktemp("session") / "tf_files")
    result = wrapper("train.sh", tf_files, "--testing_percentage", "20", "--preset", "fast")
    return tf_files, result


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
    # Under pytest-xdist (test.sh), the workers' folders share a parent: the first worker to
    # get here trains, the other waits for it and reuses the model.
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / "superheroes"
    tf_files, record = folder / "tf_files", folder / "train.json"
    with open(root / "superheroes.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not record.exists():
            shutil.rmtree(folder, ignore_errors=True)
            (tf_files / "data").mkdir(parents=True)
            for label in (SUPERHEROES / "train").iterdir():
                (tf_files / "data" / label.name).symlink_to(label, target_is_directory=True)
            # The head-only preset: 22 s rather than 59 s with three epochs of fine-tuning,
            # and 98.4% rather than 100% on its 62 test photos. The files are the same
            # kind (one frozen graph of backbone and head); fine-tuning is test_fine_tune's.
            lite0 = ("--backbone", "efficientnet_lite0")
            result = wrapper("train.sh", tf_files, *lite0, "--preset", "fast")
            arguments = [str(argument) for argument in result.args]
            record.write_text(json.dumps([arguments, result.stdout, result.stderr]))
    arguments, stdout, stderr = json.loads(record.read_text())
    return tf_files, subprocess.CompletedProcess(arguments, 0, stdout, stderr)
