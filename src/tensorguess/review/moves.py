"""Moving and copying photos without ever replacing a file, in steps that a second call
finishes after a kill at any point, so that every photo ends up in exactly one place.

A move gives the photo a second name in the target folder (a hard link at the first free
name from the one planned: guessDir's free names, classify/sort.py), then drops the old
name; across file systems it copies (verified against the photo's SHA-256) and then drops
the old name. A second call finds the photo under the planned name or a counted one (`-1`,
`-2`, ...) and drops the old name if that is all that is left to do. A copy is written
whole under a temporary name and then named (`copy_without_overwriting`); a second call
finds it named, or removes what a killed copy left half-written.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from tensorguess.classify.sort import FreeNames, SourceChanged, copy_without_overwriting
from tensorguess.files import file_digest, make_folder, sync_directory

# Tests set it to a point's name to have this process killed there (SIGKILL, as a power cut
# or the OOM killer would), between the journal line and the files it describes.
CRASH_VARIABLE = "TENSORGUESS_REVIEW_CRASH"
JOURNALED, LINKED, COPIED = "journaled", "linked", "copied"
_TEMPORARY = ".tmp-sort-"  # copy_without_overwriting's temporaries


class Incomplete(Exception):
    """The move or copy cannot be done (the photo changed or vanished); nothing was changed."""


def crash_point(name: str) -> None:
    """Die here, at once, if the tests asked for it."""
    if os.environ.get(CRASH_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def free_name(folder: Path, name: str) -> str:
    """The first of `name`, `stem-1.ext`, ... not taken in `folder` now: the plan the journal
    records (the move itself still never replaces, and takes the next if it is taken by then)."""
    stem, suffix = os.path.splitext(name)
    for attempt in range(1_000_000):
        candidate = name if attempt == 0 else f"{stem}-{attempt}{suffix}"
        if not os.path.lexists(folder / candidate):
            return candidate
    raise Incomplete(f"{folder}: no free name for {name}")


def _named_from(folder: Path, name: str) -> list[Path]:
    """`folder/name` and the counted names made from it that exist, the planned one first."""
    stem, suffix = os.path.splitext(name)
    pattern = re.compile(rf"{re.escape(stem)}-\d+{re.escape(suffix)}")
    try:
        counted = sorted(entry for entry in folder.iterdir() if pattern.fullmatch(entry.name))
    except FileNotFoundError:
        return []
    planned = folder / name
    return ([planned] if os.path.lexists(planned) else []) + counted


def content(path: Path) -> str | None:
    """The SHA-256 of the file at `path`, or None when there is none or it cannot be read."""
    try:
        return file_digest(path) if os.path.isfile(path) else None
    except OSError:
        return None


def _holds(path: Path, digest: str) -> bool:
    return content(path) == digest


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def complete_move(source: Path, folder: Path, name: str, digest: str) -> Path:
    """Move `source` (SHA-256 `digest`) into `folder` as `name` or the first free counted
    name, or finish the move a kill interrupted; where the photo is now."""
    placed = _named_from(folder, name)
    if os.path.lexists(source):
        for candidate in placed:
            # Killed after naming the photo there: the same file, or (across file systems)
            # the verified copy under the very name the journal planned.
            if _same_file(candidate, source) or (
                candidate == folder / name and _holds(candidate, digest)
            ):
                _drop(source)
                return candidate
        if not _holds(source, digest):
            raise Incomplete(f"{source} changed or cannot be read")
        make_folder(folder)
        names = FreeNames(folder)
        if os.lstat(source).st_dev == os.stat(folder).st_dev:
            moved = names.claim(source, name)
        else:
            moved = copy_without_overwriting(source, names, name, digest).path
        crash_point(LINKED)
        _drop(source)
        sync_directory(folder)
        return moved
    for candidate in placed:
        if _holds(candidate, digest):
            return candidate
    raise Incomplete(f"{source} is no longer there")


def _drop(path: Path) -> None:
    path.unlink()
    sync_directory(path.parent)


def complete_copy(source: Path, folder: Path, name: str, digest: str) -> Path:
    """Copy `source` (SHA-256 `digest`) into `folder` as `name` or the first free counted
    name, or find the copy a killed call made; where the copy is."""
    _remove_half_copies(source, folder)
    for candidate in _named_from(folder, name):
        if _holds(candidate, digest):
            return candidate
    make_folder(folder)
    try:
        copied = copy_without_overwriting(source, FreeNames(folder), name, digest)
    except SourceChanged:
        raise Incomplete(f"{source} changed since it was listed") from None
    except FileNotFoundError:
        raise Incomplete(f"{source} is no longer there") from None
    sync_directory(folder)
    return copied.path


def _remove_half_copies(source: Path, folder: Path) -> None:
    """Remove the temporaries a killed copy of `source` left in `folder`: their bytes are
    the first bytes of the photo, which is still in `source`."""
    try:
        temporaries = [entry for entry in folder.iterdir() if entry.name.startswith(_TEMPORARY)]
        with open(source, "rb") as photo:
            for temporary in temporaries:
                part = temporary.read_bytes()
                photo.seek(0)
                if photo.read(len(part)) == part:
                    temporary.unlink()
    except OSError:
        return  # the source or the folder is gone: nothing of ours to tidy


def complete_drop(copy: Path, original: Path, digest: str) -> None:
    """Remove `copy`, a copy made of `original`, once `original` is checked to hold the same
    bytes (SHA-256 `digest`); nothing to do if it is gone already."""
    if not os.path.lexists(copy):
        return
    if _same_file(copy, original) or not _holds(original, digest):
        raise Incomplete(f"{original} no longer holds the photo copied to {copy}")
    if not _holds(copy, digest):
        raise Incomplete(f"{copy} changed since it was copied")
    _drop(copy)
