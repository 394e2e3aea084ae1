"""Writing files that matter atomically: a temporary name in the same folder, then a rename."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


def write_bytes_atomic(target: Path, data: bytes) -> None:
    """Write `data` to `target` atomically."""
    with atomic_path(target) as temporary:
        with open(temporary, "wb") as stream:
            stream.write(data)
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
