"""The README's main job, exactly as written, on the sample the repository ships.

A copy of the repository's tracked files (as they are in the working tree) stands in for a
fresh clone: the three lines of the README's "Try it" section run in it, with `$PWD` at
its root, and what a newcomer would notice is checked: the accuracy line, the guess lines,
the sorted folder, and that git sees nothing new (train.sh's outputs are ignored).
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import ROOT, run

SCORE_LINE = re.compile(r"^(\S+) \(score = (\d\.\d{5})\)$")
ACCURACY_LINE = re.compile(r"^Final test accuracy = ([\d.]+)% \(N=(\d+)\)$", re.M)
LABELS = {"zero", "one", "five"}
# What each photo of test_data/ shows: the dataset's digit folder it was copied from.
TEST_DATA_TRUTH = {
    **dict.fromkeys(
        ("IMG_1138.JPG", "IMG_4254.JPG", "IMG_4704.JPG", "IMG_5132.JPG", "IMG_5562.JPG"), "zero"
    ),
    **dict.fromkeys(
        ("IMG_1139.JPG", "IMG_4255.JPG", "IMG_4705.JPG", "IMG_5123.JPG", "IMG_5549.JPG"), "one"
    ),
    **dict.fromkeys(
        ("IMG_1143.JPG", "IMG_4260.JPG", "IMG_4699.JPG", "IMG_5116.JPG", "IMG_5542.JPG"), "five"
    ),
}


def readme_main_commands() -> list[str]:
    """The command lines of the first bash block in the README's "Try it" section."""
    section = (ROOT / "README.md").read_text().split("## Try it", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```bash\n(.*?)^```", section, re.M | re.S)
    assert block, "the README's Try it section has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def _git(repository: Path, *arguments: str) -> str:
    return run("git", "-C", repository, *arguments).stdout


def _copy_tracked_files(destination: Path) -> Path:
    """The tracked files as they are in the working tree, in a git repository of their own."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout of the project")
    listed = _git(ROOT, "ls-files", "-z").split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file() or source.is_symlink():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name, follow_symlinks=False)
    _git(destination, "init", "-q")
    _git(destination, "add", "-A")
    identity = ("-c", "user.name=test", "-c", "user.email=test@example.invalid")
    _git(destination, *identity, "commit", "-q", "--no-verify", "-m", "the tracked files")
    return destination


def _in_clone(clone: Path, command: str) -> subprocess.CompletedProcess:
    """Run one command line with bash in the clone, as typed there by a user; it must succeed."""
    # The project's own environment: the wrappers would otherwise build one in the clone.
    venv = os.environ.get("TENSORGUESS_VENV") or str(ROOT / ".venv")
    return run("bash", "-c", command, cwd=clone, PWD=str(clone), TENSORGUESS_VENV=venv)


@dataclass
class ReadmeRun:
    clone: Path
    commands: list[str]
    train: subprocess.CompletedProcess
    guess: subprocess.CompletedProcess
    guess_dir: subprocess.CompletedProcess
    status: list[str]  # `git status --porcelain --ignored` right after the three lines


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory) -> ReadmeRun:
    clone = _copy_tracked_files(tmp_path_factory.mktemp("clone"))
    commands = readme_main_commands()
    scripts = [shlex.split(line)[:2] for line in commands]
    assert scripts == [["bash", "train.sh"], ["bash", "guess.sh"], ["bash", "guessDir.sh"]]
    train, guess, guess_dir = (_in_clone(clone, line) for line in commands)
    status = _git(clone, "status", "--porcelain", "--ignored", "--untracked-files=all")
    return ReadmeRun(clone, commands, train, guess, guess_dir, status.splitlines())


def _arguments(result: ReadmeRun, index: int) -> list[str]:
    """The words of the README's command `index` as bash passes them, `$PWD` expanded."""
    return shlex.split(result.commands[index].replace("$PWD", str(result.clone)))


def test_train_on_the_sample_reports_a_high_accuracy(readme_run):
    output = readme_run.train.stdout
    match = ACCURACY_LINE.search(output)
    assert match, output
    assert float(match.group(1)) >= 90 and int(match.group(2)) >= 8, match.group(0)
    # The licence and notice beside data/ are not taken for photos, nor skipped.
    assert "Skipped" not in output and "Traceback" not in readme_run.train.stderr
    labels = (readme_run.clone / "tf_files" / "retrained_labels.txt").read_text().split()
    assert set(labels) == LABELS


def test_guess_names_the_right_digit_first(readme_run):
    photo = Path(_arguments(readme_run, 1)[3])
    assert photo.parent == readme_run.clone / "test_data"
    lines = readme_run.guess.stdout.splitlines()
    matches = [SCORE_LINE.match(line) for line in lines]
    assert all(matches) and len(lines) == len(LABELS), readme_run.guess.stdout
    assert matches[0].group(1) == TEST_DATA_TRUTH[photo.name]
    scores = [float(match.group(2)) for match in matches]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.5


def test_guess_dir_sorts_every_test_photo_mostly_right(readme_run):
    destination = Path(_arguments(readme_run, 2)[4])
    assert destination == readme_run.clone / "classified"
    # test_data/ holds photos only, so nothing is listed as skipped.
    assert "Skipped" not in readme_run.guess_dir.stdout, readme_run.guess_dir.stdout
    with open(destination / "manifest.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert sorted(Path(row["source"]).name for row in rows) == sorted(TEST_DATA_TRUTH)
    copies = sorted(path.name for path in destination.iterdir() if path.name != "manifest.csv")
    assert copies == sorted(Path(row["destination"]).name for row in rows)
    assert all(re.fullmatch(r"(zero|one|five)-\d\.\d{5}\.jpg", name) for name in copies)
    wrong = [row for row in rows if row["label"] != TEST_DATA_TRUTH[Path(row["source"]).name]]
    assert len(wrong) <= 1, wrong


def test_git_sees_nothing_new_after_the_three_commands(readme_run):
    new = [line for line in readme_run.status if not line.startswith("!! ")]
    assert new == [], new
    ignored = {line[3:] for line in readme_run.status if line.startswith("!! ")}
    written = {"tf_files/retrained_graph.pb", "tf_files/report.html", "classified/manifest.csv"}
    assert written <= ignored, sorted(ignored)


def test_the_same_commands_with_relative_paths(readme_run):
    clone = readme_run.clone
    photos = len(list((clone / "tf_files" / "data").glob("*/*.JPG")))
    # The README's default trained on EfficientNet-Lite2's features: a fast retrain on the
    # same backbone finds every one of them in the cache.
    train = _in_clone(clone, "bash train.sh tf_files --preset fast --backbone efficientnet_lite2")
    cached = f"Features: 0 computed, {photos} from cache"
    assert re.search(f"^{cached}", train.stdout, re.M), train.stdout
    assert float(ACCURACY_LINE.search(train.stdout).group(1)) >= 90, train.stdout

    guess = _in_clone(clone, "bash guess.sh tf_files test_data/IMG_1143.JPG")
    assert SCORE_LINE.match(guess.stdout.splitlines()[0]).group(1) == "five", guess.stdout

    _in_clone(clone, "bash guessDir.sh tf_files test_data classified2")
    with open(clone / "classified2" / "manifest.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert sorted(Path(row["source"]).name for row in rows) == sorted(TEST_DATA_TRUTH)
    assert sum(row["label"] != TEST_DATA_TRUTH[Path(row["source"]).name] for row in rows) <= 1
    # Retraining left nothing for git either; classified2/ is a folder the README never names.
    status = _git(clone, "status", "--porcelain", "--untracked-files=normal")
    assert status.splitlines() == ["?? classified2/"], status
