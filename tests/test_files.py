"""Files that matter: the folder lock, tidying after a killed run, printable names."""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys

import pytest

from tensorguess.errors import TensorguessError
from tensorguess.files import LOCK_FILE, finish_interrupted_writes, folder_lock, printable


def test_a_folder_is_locked_for_one_run_at_a_time(tmp_path):
    with folder_lock(tmp_path, "train"):
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        with pytest.raises(TensorguessError) as refused:
            with folder_lock(tmp_path, "train"):
                pass
        assert str(refused.value) == (
            f"{tmp_path}: another train is running on this folder (process {os.getpid()}); "
            "wait for it to finish"
        )
    assert not (tmp_path / LOCK_FILE).exists()  # a finished run leaves no lock file
    with folder_lock(tmp_path, "train"):
        pass


def test_a_killed_holder_does_not_keep_the_lock(tmp_path):
    holder = (
        "import os, sys, time; from tensorguess.files import folder_lock\n"
        "with folder_lock(sys.argv[1], 'sort'):\n"
        "    os.kill(os.getpid(), 9)"
    )
    killed = subprocess.run([sys.executable, "-c", holder, str(tmp_path)], timeout=60)
    assert killed.returncode == -9 and (tmp_path / LOCK_FILE).exists()
    with folder_lock(tmp_path, "sort"):
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"


@pytest.mark.parametrize("answer", [errno.ENOLCK, errno.EINVAL], ids=["ENOLCK", "EINVAL"])
def test_a_file_system_without_locks_runs_unguarded_and_says_so(
    tmp_path, monkeypatch, capsys, answer
):
    def no_locks(*args):
        raise OSError(answer, os.strerror(answer))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    ran = []
    with folder_lock(tmp_path, "sort"):
        ran.append(True)
    assert ran == [True]
    assert capsys.readouterr().err == (
        f"tensorguess: warning: {tmp_path}: this file system cannot lock files "
        f"({os.strerror(answer)}); going on without a lock: run no other sort on this folder "
        "meanwhile\n"
    )
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_lock_that_fails_otherwise_is_refused_in_one_line(tmp_path, monkeypatch):
    def failing(*args):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(fcntl, "flock", failing)
    ran = []
    with pytest.raises(TensorguessError) as refused:
        with folder_lock(tmp_path, "train"):
            ran.append(True)
    assert ran == []
    assert str(refused.value) == (
        f"{tmp_path / LOCK_FILE}: cannot lock the folder (Input/output error); check the file "
        "system and run the train again"
    )


def test_what_a_killed_export_left_is_tidied(tmp_path):
    (tmp_path / ".old-saved_model").mkdir()  # killed between the two renames
    (tmp_path / ".old-saved_model" / "saved_model.pb").write_bytes(b"the previous model")
    (tmp_path / ".tmp-export.abc").mkdir()
    (tmp_path / ".tmp-export.abc" / "retrained_graph.pb").write_bytes(b"half")
    (tmp_path / ".tmp-retrained_labels.txt.xyz").write_text("a\n")
    (tmp_path / "retrained_graph.pb").write_bytes(b"graph")
    (tmp_path / ".old-retrained_graph.pb").write_bytes(b"older graph")

    finish_interrupted_writes(tmp_path)

    assert sorted(path.name for path in tmp_path.iterdir()) == ["retrained_graph.pb", "saved_model"]
    assert (tmp_path / "saved_model" / "saved_model.pb").read_bytes() == b"the previous model"
    assert (tmp_path / "retrained_graph.pb").read_bytes() == b"graph"


def test_printable_names_stay_on_one_line():
    assert printable("a\nb\tc.jpg") == "a\\nb\\tc.jpg"
    assert printable(os.fsdecode(b"caf\xe9.jpg")) == "caf\\xe9.jpg"
    assert printable("photo é 1.jpg") == "photo é 1.jpg"
