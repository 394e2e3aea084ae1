"""scripts/docker_base.sh's decisions, against a stand-in `docker` that records its calls: it
makes the stand-in base image only when it must, and says in one line why it cannot.

(tests/test_docker_run.py builds and runs the real thing, in .ci/run.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from helpers import ROOT

PIN = re.search(r"^tensorflow==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)[1]
BASE = re.search(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.M)[1]

STAND_IN = """#!{python}
import json, os, sys

arguments = sys.argv[1:]
with open(os.environ["STAND_IN_LOG"], "a") as log:
    log.write(json.dumps(arguments) + "\\n")
if arguments[:1] == ["info"]:
    sys.exit(0 if os.environ["STAND_IN_ENGINE"] == "up" else 1)
if arguments[:2] == ["image", "inspect"]:
    label = os.environ.get("STAND_IN_IMAGE_LABEL")
    if label is None:
        sys.exit(1)
    print(label if "--format" in arguments else "[]")
    sys.exit(0)
sys.exit(0)
"""


@pytest.fixture
def docker(tmp_path):
    """Run docker_base.sh with the stand-in first on PATH; returns (result, docker calls)."""
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    (bin_folder / "docker").write_text(STAND_IN.format(python=sys.executable))
    (bin_folder / "docker").chmod(0o755)
    log = tmp_path / "calls.jsonl"

    def run(engine: str = "up", label: str | None = None, *arguments: str):
        environment = {
            **os.environ,
            "PATH": f"{bin_folder}{os.pathsep}{os.environ['PATH']}",
            "STAND_IN_LOG": str(log),
            "STAND_IN_ENGINE": engine,
            "TENSORGUESS_BASE_WORKDIR": str(tmp_path / "work"),
        }
        if label is not None:
            environment["STAND_IN_IMAGE_LABEL"] = label
        result = subprocess.run(
            ["bash", str(ROOT / "scripts" / "docker_base.sh"), *arguments],
            capture_output=True,
            text=True,
            env=environment,
            timeout=60,
        )
        calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return result, calls

    return run


def makes_nothing(calls: list[list[str]]) -> bool:
    return not any(call[:1] in (["build"], ["import"]) for call in calls)


def test_without_an_engine_it_says_so_in_one_line_and_makes_nothing(docker, tmp_path):
    result, calls = docker("down")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "docker_base: error: no Docker engine answers 'docker info'; start one, e.g. "
        "dockerd --bridge=none --iptables=false --ip-masq=false &"
    ]
    assert makes_nothing(calls) and not (tmp_path / "work").exists()


def test_a_stand_in_of_the_pinned_tensorflow_is_kept(docker):
    result, calls = docker("up", f"tensorflow=={PIN}")
    assert result.returncode == 0, result.stderr
    assert f"the stand-in {BASE} is there already" in result.stderr
    assert makes_nothing(calls)


def test_a_real_base_image_is_left_alone(docker):
    result, calls = docker("up", "")
    assert result.returncode == 0, result.stderr
    assert f"{BASE} is a real image, not a stand-in: nothing to do" in result.stderr
    assert makes_nothing(calls)


def test_a_stand_in_of_another_tensorflow_is_one_line_asking_for_force(docker):
    result, calls = docker("up", "tensorflow==2.0.0")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"docker_base: error: {BASE} is a stand-in with tensorflow==2.0.0, not "
        f"tensorflow=={PIN}: run again with --force"
    ]
    assert makes_nothing(calls)


def test_an_unknown_argument_is_one_line(docker):
    result, calls = docker("up", None, "--forse")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "docker_base: error: unknown argument '--forse' (see --help)"
    ]
    assert calls == []


def test_help_says_what_it_needs(docker):
    result, calls = docker("down", None, "--help")
    assert result.returncode == 0
    assert "Needs root, debootstrap and" in result.stdout and calls == []
