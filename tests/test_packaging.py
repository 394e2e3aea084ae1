"""Packaging: the version is written once, and constraints.txt pins every requirement."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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


def pins() -> dict[str, str]:
    """constraints.txt as {normalised name: version}."""
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            found[canonicalize_name(name)] = version
    return found


def test_constraints_pin_every_requirement_of_every_extra():
    # The wrappers, test.sh and the Dockerfile install with -c constraints.txt: a requirement
    # left out would float to whatever PyPI has that day.
    pinned = pins()
    requirements = [Requirement(text) for text in importlib.metadata.requires("tensorguess")]
    extras = importlib.metadata.metadata("tensorguess").get_all("Provides-Extra")
    assert {"hub", "test"} <= set(extras)
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pinned[name]), f"{name}=={pinned[name]}"
