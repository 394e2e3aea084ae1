"""Files that matter: atomic writes (a temporary name in the same folder, then a rename),
content digests, and the lock that keeps two runs from writing one folder at once."""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, ParamSpec, TypeVar

from tensorguess.errors import TensorguessError

# mkstemp creates files readable by their owner alone; a model or manifest should get the
# same permissions as any file the user creates (read by a Docker container, a colleague).
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success rename it over `target`.

    An interrupted writer leaves `target` as it was (only a `.tmp-*` file may remain).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".tmp-{target.name}.", dir=target.parent)
    os.close(handle)
    temporary = Path(name)
    os.chmod(temporary, 0o666 & ~_UMASK)
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_bytes_atomic(target: Path, data: bytes, durable: bool = True) -> None:
    """Write `data` to `target` atomically (and flushed to the disk, when `durable`).

    Without `durable`, a power cut can leave a complete-looking but empty file: fine for a
    cache whose reader checks and recomputes its entries, and a thousand times cheaper.
    """
    with atomic_path(target) as temporary:
        with open(temporary, "wb") as stream:
            stream.write(data)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())


def write_text_atomic(target: Path, text: str) -> None:
    """Write `text` (UTF-8) to `target` atomically."""
    write_bytes_atomic(target, text.encode("utf-8"))


def replace_directory_atomic(built: Path, target: Path) -> None:
    """Put the finished directory `built` at `target`, replacing an older one.

    Two renames: the old directory moves aside first, so at every moment `target` is
    either the complete old version or the complete new one.
    """
    aside = target.with_name(f".old-{target.name}")
    if aside.exists():
        shutil.rmtree(aside)
    if target.exists():
        os.replace(target, aside)
    os.replace(built, target)
    if aside.exists():
        shutil.rmtree(aside)


def cache_directory(kind: str) -> Path:
    """The per-machine cache folder we write: $TENSORGUESS_CACHE_DIR/<kind>, else the XDG cache."""
    configured = os.environ.get("TENSORGUESS_CACHE_DIR")
    if configured:
        return Path(configured) / kind
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tensorguess" / kind


def cache_directories(kind: str) -> list[Path]:
    """Where a cached entry may be found: our own cache, then a read-only one if there is one.

    $TENSORGUESS_BUILTIN_CACHE_DIR names a cache made in advance that the user cannot write
    (the Docker image converts the backbones at build time into one); what is missing there
    is made and kept in the writable cache.
    """
    folders = [cache_directory(kind)]
    builtin = os.environ.get("TENSORGUESS_BUILTIN_CACHE_DIR")
    if builtin and Path(builtin) / kind != folders[0]:
        folders.append(Path(builtin) / kind)
    return folders


def make_folder(folder: Path) -> None:
    """Create `folder` (and its parents) if missing, or say in one line why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TensorguessError(f"{folder}: cannot create the folder ({error.strerror})") from None


def printable(path: Path | str) -> str:
    """A file name as one printable line: control characters and undecodable bytes escaped.

    A name may hold a newline (which would fake a line of output) or bytes that are not
    UTF-8 (which a strict terminal encoding refuses to print).
    """
    text = os.fsencode(str(path)).decode("utf-8", "backslashreplace")
    return "".join(
        character.encode("unicode_escape").decode("ascii")
        if not character.isprintable()
        else character
        for character in text
    )


def sync_directory(folder: Path) -> None:
    """Put on disk the names made, renamed or removed in `folder` (an fsync of a file does
    not promise its name on every file system)."""
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


LOCK_FILE = ".tensorguess.lock"
# What flock answers on a file system that has no locks (NFS without its lock daemon, some
# FUSE mounts), as opposed to a lock held by someone else or a real failure.
_NO_LOCKS_HERE = {errno.ENOLCK, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}


@contextmanager
def folder_lock(folder: Path, activity: str) -> Iterator[None]:
    """Hold `folder/.tensorguess.lock` while `activity` runs; refuse if another process holds it.

    An `flock` dies with its process, however that ends, so a crashed or killed run never
    leaves the folder locked (only the file, reused by the next run). The holder writes its
    process id in the file for the message, and removes the file when it is done. On a file
    system without locks the activity runs unguarded after a one-line warning; any other
    failure to lock is refused in one line.
    """
    path = Path(folder) / LOCK_FILE
    while True:
        try:
            stream = open(path, "a+", encoding="ascii")
        except OSError as error:
            raise TensorguessError(f"{folder}: cannot write there ({error.strerror})") from None
        try:
            fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            stream.seek(0)
            holder = stream.read(20).strip() or "unknown"
            stream.close()
            if error.errno in (errno.EAGAIN, errno.EACCES):
                raise TensorguessError(
                    f"{folder}: another {activity} is running on this folder (process "
                    f"{holder}); wait for it to finish"
                ) from None
            if error.errno not in _NO_LOCKS_HERE:
                raise TensorguessError(
                    f"{path}: cannot lock the folder ({error.strerror or error}); check the "
                    f"file system and run the {activity} again"
                ) from None
            # Some network mounts have no locks at all: refusing would make the folder
            # unusable there, so the run goes on, saying what it cannot guard against.
            print(
                f"tensorguess: warning: {folder}: this file system cannot lock files "
                f"({error.strerror}); going on without a lock: run no other {activity} on "
                "this folder meanwhile",
                file=sys.stderr,
            )
            try:
                yield
            finally:
                path.unlink(missing_ok=True)  # a lock file that locks nothing misleads
            return
        if _same_file(stream, path):
            break
        stream.close()  # its holder removed it between our open and our lock: take the new one
    with stream:
        stream.truncate(0)
        stream.write(f"{os.getpid()}\n")
        stream.flush()
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # still locked: nobody else can hold this file now


def _same_file(stream: IO[str], path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(stream.fileno()).st_ino
    except FileNotFoundError:
        return False


Parameters = ParamSpec("Parameters")
Result = TypeVar("Result")


def holding_train_lock(function: Callable[Parameters, Result]) -> Callable[Parameters, Result]:
    """Run `function(tf_files, ...)` holding TF_FILES/.tensorguess.lock: one train at a time.

    Under the lock, what a killed run left half-written in TF_FILES is tidied first.
    """

    @functools.wraps(function)
    def locked(*args: Parameters.args, **kwargs: Parameters.kwargs) -> Result:
        tf_files = Path(args[0] if args else kwargs["tf_files"])  # type: ignore[arg-type]
        if not tf_files.is_dir():
            return function(*args, **kwargs)  # nothing to guard; the scan names the problem
        with folder_lock(tf_files, "train"):
            finish_interrupted_writes(tf_files)
            return function(*args, **kwargs)

    return locked


def finish_interrupted_writes(folder: Path) -> None:
    """Tidy what a killed writer left in `folder`: temporaries go, a folder set aside returns.

    Only safe while holding the folder's lock: nobody else is writing there.
    """
    for entry in Path(folder).iterdir():
        if entry.name.startswith(".old-"):
            original = entry.with_name(entry.name[len(".old-") :])
            if not original.exists():
                os.replace(entry, original)  # killed between the two renames: the old one is whole
            else:
                _remove(entry)
        elif entry.name.startswith(".tmp-"):
            _remove(entry)


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)
