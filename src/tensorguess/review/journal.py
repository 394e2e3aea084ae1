"""The journal, `TF_FILES/review.jsonl`: one JSON object a line, appended and fsynced before
what it says is done; held locked by one review at a time.

An action's line carries what is needed to finish it after a kill (review/actions.py);
`{"done": ID, ...}` follows once it is applied. A line cut short by a power cut is dropped
when the journal is opened; any other line that is not a JSON object stops the review with
one line naming it, rather than acting on a history it cannot read.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path

from tensorguess.errors import TensorguessError
from tensorguess.files import sync_directory

JOURNAL = "review.jsonl"


class Journal:
    """The records of TF_FILES/review.jsonl, in order, and the open file to append to."""

    def __init__(self, tf_files: Path) -> None:
        self.path = Path(tf_files) / JOURNAL
        existed = self.path.exists()
        try:
            self._handle = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
        except OSError as error:
            raise TensorguessError(
                f"{self.path}: cannot write the review's journal ({error.strerror})"
            ) from None
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EACCES):
                os.close(self._handle)
                raise TensorguessError(
                    f"{tf_files}: another tensorguess review is running on this folder; use "
                    "its page, or stop it first"
                ) from None
            # A file system without locks: one review at a time is then the user's to keep.
        if not existed:
            sync_directory(self.path.parent)
        self.records = self._read()

    def _read(self) -> list[dict]:
        data = self.path.read_bytes()
        whole = data.rfind(b"\n") + 1
        if whole < len(data):  # a power cut took the end of the last line: it never counted
            os.ftruncate(self._handle, whole)
            os.fsync(self._handle)
        records = []
        for number, line in enumerate(data[:whole].splitlines(), 1):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                raise TensorguessError(
                    f"{self.path}: line {number} is not a journal record; move the file aside "
                    "(the photos are where its complete lines put them) and start again"
                )
            records.append(record)
        return records

    def append(self, record: dict) -> None:
        """Write `record` as one line and put it on disk before returning."""
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        os.write(self._handle, line)  # one write: O_APPEND puts it whole at the end
        os.fsync(self._handle)
        self.records.append(record)

    def close(self) -> None:
        """Let the journal go (and its lock)."""
        os.close(self._handle)
