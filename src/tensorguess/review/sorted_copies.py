"""A sorted DEST as the review reads it: the doubtful copies its manifests list, and the
label a person gives one, recorded in that copy's manifest line.

guessDir.sh's manifests (classify/sort.py) list each copy with the model's label and
scores. The review records a person's label in a last column, `reviewed_label` (an undo
empties it again), rewriting the manifest whole: written beside it under a hidden name,
fsynced, renamed onto it, DEST's folder fsynced, so a kill leaves the old manifest or the
new one, never half of one. It does so holding DEST's lock (the caller takes it: see
review/session.py), so no guessDir.sh appends meanwhile; guessDir.sh then reads the
manifest as before and writes that cell empty in the lines it adds.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

from tensorguess.classify.sort import COPIES, MANIFEST_COLUMNS, REVIEWED_LABEL, UNKNOWN, UNSURE
from tensorguess.files import sync_directory, write_bytes_atomic

_ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}  # the manifest's own


@dataclass(frozen=True)
class SortedCopy:
    """A copy guessDir.sh made: where it is, what its manifest line says of it."""

    path: Path
    manifest: Path
    destination: str  # the manifest's destination column, which names the copy there
    sha256: str
    label: str
    score: float
    source_name: str

    @property
    def unknown(self) -> bool:
        """Named unlike every training photo (`--unknown`)."""
        return self.path.name.startswith(f"{UNKNOWN}-")


def _rows(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="", **_ENCODING) as stream:
            return list(csv.reader(stream))
    except (OSError, csv.Error):
        return []


def _reviewed_column(header: list[str]) -> int | None:
    return len(header) - 1 if header and header[-1] == REVIEWED_LABEL else None


def doubtful_copies(dest: Path) -> list[SortedCopy]:
    """The `unsure-` and `unknown-` copies DEST's manifests list that are still there and
    that nobody has labelled yet, lowest score first."""
    found = []
    for manifest in sorted(Path(dest).glob("manifest*.csv")):
        rows = _rows(manifest)
        if not rows or rows[0][: len(MANIFEST_COLUMNS)] != MANIFEST_COLUMNS:
            continue
        header = rows[0]
        copies = header.index(COPIES) if COPIES in header else None
        reviewed = _reviewed_column(header)
        for row in rows[1:]:
            if len(row) != len(header):
                continue  # a line a power cut left half-written
            if reviewed is not None and row[reviewed]:
                continue
            # Relative to DEST, so a DEST moved since its sort is still read right.
            relative = row[copies].split()[0] if copies is not None and row[copies] else ""
            path = Path(dest) / (relative or os.path.basename(row[1]))
            if not path.name.startswith((f"{UNSURE}-", f"{UNKNOWN}-")) or not path.is_file():
                continue
            found.append(
                SortedCopy(path, manifest, row[1], row[4], row[2], float(row[3]), Path(row[0]).name)
            )
    return sorted(found, key=lambda copy: (copy.score, str(copy.path)))


def record_reviewed(manifest: Path, destination: str, sha256: str, label: str) -> None:
    """Record `label` ("" to take one back) as a person's label of the copy that `manifest`
    lists at `destination` with content `sha256`; on disk before returning. The caller
    holds DEST's lock. Doing it twice does no harm (an action finished again after a kill)."""
    manifest = Path(manifest)
    data = manifest.read_bytes()
    whole = data.rfind(b"\n") + 1  # a last line a power cut left half-written never counted
    rows = list(csv.reader(io.StringIO(data[:whole].decode(**_ENCODING), newline="")))
    width, column = len(rows[0]), _reviewed_column(rows[0])
    added = column is None
    if added:
        rows = [row + [""] if len(row) == width else row for row in rows]
        rows[0][-1] = REVIEWED_LABEL
        column, width = width, width + 1
    matching = [
        row for row in rows[1:] if len(row) == width and row[1] == destination and row[4] == sha256
    ]
    if not matching:
        raise FileNotFoundError(f"{manifest} no longer lists {destination}")
    if not added and all(row[column] == label for row in matching):
        return
    for row in matching:
        row[column] = label
    text = io.StringIO(newline="")
    csv.writer(text).writerows(rows)
    write_bytes_atomic(manifest, text.getvalue().encode(**_ENCODING))
    sync_directory(manifest.parent)
