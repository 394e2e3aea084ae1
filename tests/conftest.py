"""Shared fixtures: small photo folders the tests draw themselves, and a trained model."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tensorguess.sample_data import draw_shape

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SUPERHEROES = SHARED / "datasets" / "superheroes"
LABELS = ("circle", "square")


@pytest.fixture(scope="session", autouse=True)
def hermetic_cache(tmp_path_factory):
    """Convert the backbone into a cache of the test session, not the user's ~/.cache."""
    os.environ["TENSORGUESS_CACHE_DIR"] = str(tmp_path_factory.mktemp("backbone-cache"))
    os.environ.pop("TENSORGUESS_RUNTIME", None)
    os.environ["TENSORGUESS_RUNTIME"] = "native"
    yield


def draw_photos(folder: Path, label: str, count: int, seed: int, prefix: str = "") -> list[Path]:
    """Write `count` JPEG photos of `label` (a shape) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{label}-{seed}")
    paths = []
    for number in range(count):
        path = folder / f"{prefix or label}_{seed}_{number:03d}.jpg"
        draw_shape(label, rng, size=160).save(path, quality=90)
        paths.append(path)
    return paths


def make_tf_files(root: Path, per_label: int = 24, seed: int = 0) -> Path:
    """A tf_files folder with data/circle and data/square."""
    for label in LABELS:
        draw_photos(root / "data" / label, label, per_label, seed)
    return root


def run(*command: str | Path, cwd: Path | None = None, check: bool = True, **env: str):
    """Run a command, capturing text output; fail with its output when `check` and rc != 0."""
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=600,
    )
    if check and result.returncode != 0:
        pytest.fail(f"{command} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def tensorguess(*arguments: str | Path, **kwargs):
    """Run the `tensorguess` command line in a subprocess, as a user would."""
    return run(sys.executable, "-m", "tensorguess", *arguments, **kwargs)


def wrapper(script: str, *arguments: str | Path, **kwargs):
    """Run one of the user's scripts (train.sh, guess.sh, guessDir.sh) with bash."""
    return run("bash", ROOT / script, *arguments, **kwargs)


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A tf_files folder trained once through train.sh, with that run's output."""
    tf_files = make_tf_files(tmp_path_factory.mktemp("session") / "tf_files")
    result = wrapper("train.sh", tf_files, "--testing_percentage", "20")
    return tf_files, result


@pytest.fixture
def trained_copy(trained, tmp_path) -> Path:
    """A private copy of the trained tf_files, for tests that change it."""
    return Path(shutil.copytree(trained[0], tmp_path / "tf_files", symlinks=True))
