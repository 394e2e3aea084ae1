"""Packaging: the version is written once."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

from tensorguess import __version__

ROOT = Path(__file__).resolve().parent.parent


def test_the_version_is_written_once_and_every_reader_agrees():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = {attr = "tensorguess.__version__"}' in pyproject
    assert importlib.metadata.version("tensorguess") == __version__
    shown = subprocess.run(
        [sys.executable, "-m", "tensorguess", "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown.strip() == f"tensorguess {__version__}"
