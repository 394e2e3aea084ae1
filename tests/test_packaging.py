"""Packaging: the version is written once, constraints.txt pins every requirement, and the
virtual environment's set-up says what it does."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
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
    assert {"hub", "ray", "test"} <= set(extras)
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        if name == "tensorguess":  # an extra that includes another (test has export's)
            continue
        assert name in pinned, f"{requirement} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pinned[name]), f"{name}=={pinned[name]}"


def ensure_venv(venv: Path, extras: str) -> str:
    """Run the wrappers' set-up of `venv` (whose python only records the call); its stderr."""
    script = f'source "{ROOT}/scripts/runtime.sh" && tensorguess_ensure_venv "$1"'
    environment = {**os.environ, "TENSORGUESS_VENV": str(venv)}
    return subprocess.run(
        ["bash", "-c", script, "bash", extras],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stderr


def install_key() -> str:
    script = f'source "{ROOT}/scripts/runtime.sh" && tensorguess_install_key'
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return result.stdout.strip()


@pytest.mark.parametrize(
    ("stamp", "extras", "says"),
    [
        (None, "test", "setting up {venv} (first run only"),
        ("{key} core", "test", "adding the test extras to {venv} (once)"),
        ("0 core", "", "updating {venv} to the changed pyproject.toml"),
        ("{key} test", "", None),
        ("{key} test", "test", None),
        ("{key} test", "ray", "adding the ray extras to {venv} (once)"),
        ("{key} ray\n{key} test", "test", None),
    ],
)
def test_setting_up_the_venv_says_what_it_does(tmp_path, stamp, extras, says):
    # test.sh after demo.sh only adds its extras: "first run only" would be untrue.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    calls = tmp_path / "python-calls"
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\n')
    python.chmod(0o755)
    key = install_key()
    if stamp:
        (venv / ".tensorguess-installed").write_text(stamp.format(key=key) + "\n")
    stderr = ensure_venv(venv, extras)
    if says is None:
        assert stderr == "" and not calls.exists()
    else:
        assert stderr.splitlines() == [stderr.strip()]
        assert says.format(venv=venv) in stderr and "pip install" in calls.read_text()
        stamp_lines = (venv / ".tensorguess-installed").read_text().splitlines()
        assert f"{key} {extras or 'core'}" in stamp_lines
        if stamp and stamp.startswith("{key}"):  # what other extras installed with these
            assert set(stamp.format(key=key).splitlines()) <= set(stamp_lines)  # pins stays
