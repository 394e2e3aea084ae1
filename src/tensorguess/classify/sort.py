"""guessDir: classify every image of SRC and copy it into DEST as <label>-<score>.<ext>.

With `--unknown`, an image unlike every training photo (novelty.py: its score past the
model's threshold) is named `unknown-<label>-<score>.<ext>`; with `--min_score`, one whose
best score is under it `unsure-<label>-<score>.<ext>` (unknown wins when both apply).

Users trust this with their only copy of a folder, so:

- Nothing is ever overwritten. A copy is written in full under a temporary name
  (`.tmp-sort-*`), hashed as it is written, fsynced, then linked to a free final name
  (`os.link` fails rather than replace; where hard links fail, an exclusive create reserves
  the name and the copy is renamed onto it), so two files can never claim one name.
- A copy is of the photo as it was classified: the source must still have the inode, size
  and modification time it had when SRC was listed (and the SHA-256, where it was hashed
  then), or it is left for a rerun (`SourceChanged`).
- SRC is only read, unless `--move` is given; then a source is deleted only after its
  copy in DEST is verified (same size and SHA-256) and listed in the manifest, after DEST's
  folder and then the manifest were fsynced (the copy's name and its line are on disk
  whatever the file system: an fsync of a file does not promise its name on btrfs, NFS or
  FUSE), and only if the source has not changed since it was listed. One pair of fsyncs
  covers a batch of up to `SYNC_EVERY` copies. A `--move` killed before removing the
  sources it copied is finished by the next, which syncs the same way first.
- Every image is sorted exactly once, across reruns and killed runs. The manifest
  (DEST/manifest.csv) gains one complete line per copy, holding the source's absolute
  path and SHA-256, written through to the system as soon as its copy has its name (a
  killed process loses none); a rerun skips a source it lists with the same content. Only
  the sources it lists by path are hashed up front; the others are hashed as they are
  copied, so a photo is read twice (decoded, copied), not three times. A run reads its
  manifest once, and other models' manifests only when DEST holds copies its own does not
  list. DEST's folder and the manifest are fsynced once per `SYNC_EVERY` copies, at the
  end, and always before a `--move` removes a source; the folder first, so a line these
  fsyncs put on disk names a copy whose name is there. A manifest cut short by a power cut
  loses its half-written last line (only its tail is read to find it); one left without a
  whole line (its header cut) is begun again.
- What killed runs leave is recovered, never deleted unread. An *orphan* is a file named
  like our copies that no manifest lists: a run killed after naming a copy but before
  writing its line, or a power cut that took lines written since the last fsync. A
  *temporary* (`.tmp-sort-*`) is a copy a killed run had not named yet. After clean runs
  there are none and nothing more is read; otherwise every source to sort is hashed up
  front, and every orphan and temporary too, and then:
  - an orphan with a source's content becomes that source's copy (nothing is copied
    again), renamed as a fresh copy would be named unless its name already tells the
    label and score its line records; orphans of no source stay as they are, unlisted;
  - two names of one file (a rename killed halfway) become one, and an empty orphan (a
    name a killed run reserved without hard links) holds nothing and is removed;
  - a temporary that is another name of a file in DEST (killed after naming the copy,
    before dropping the temporary name) is removed;
  - a complete temporary, with a source's content, is adopted as that source's copy like
    an orphan; one whose content a manifest lists in a copy that still holds it is removed;
  - a half-written temporary (killed mid-copy: its bytes a strict prefix of a photo in
    SRC) holds nothing that photo does not: it is removed once the photo is listed (by
    this run or an earlier one) and the fsyncs are done; until then (the photo skipped,
    say) it stays;
  - any other temporary may be the one place its photo still is (the source was moved
    away or changed): it is classified and kept under a copy's name (its extension from
    its image format), listed with the temporary's own path as its source; one that
    cannot be read as an image is kept as `recovered-<sha256 prefix>` and named among the
    skipped files.
- One sort at a time writes into a DEST (`.tensorguess.lock`, removed at the end); on a
  file system without locks a sort says so in one line and goes on unguarded.
- The predictions come from a classifier here or from Ray workers (`--ray`, cluster/);
  either way only this loop, on this machine, writes into DEST.
- Names derived from labels and source names cannot leave DEST: separators, `..`,
  control characters and leading dots are replaced, and long names are cut to fit.

A multi-label model (classify/task.py) puts each photo in a folder per label it gives it,
`DEST/<label>/<label>-<score>.<ext>` with that label's score, and a photo with none in
`DEST/untagged/<best label>-<score>.<ext>`. The promises above hold, with these additions:

- A photo with several labels is one copy with several names: the copy is made once (its
  temporary in DEST itself), named in its first folder, then hard-linked into the others;
  where the file system has no hard links, each other folder gets a copy of the first,
  made the same way (hashed, checked against the photo's SHA-256, never overwriting).
- The manifest lists it once: `label` and `score` are its best label's, `labels` those it
  was given (space-separated, best first; empty for an untagged photo), and `copies` every
  name relative to DEST, the one `destination` names first.
- `--move` removes a source only once every name of its copy is verified (a name that is
  a hard link of one verified already counts as verified) and the folders holding them are
  fsynced, DEST's first.
- Recovery looks for orphans in the label folders and `untagged/` too. A run killed while
  naming a copy leaves some of its names: the next adopts one (the others, being the same
  file, are dropped, never their content) and makes the rest again; a copy a killed run
  made in another folder without hard links is kept as that folder's name.
- `--min_score` is refused (each label has its threshold, chosen by train.sh); `--unknown`
  names a photo `unknown-<label>-<score>.<ext>` in each of its folders.

A person's label for a copy (given on `tensorguess review`'s page) is recorded in the
manifest's last column, `reviewed_label`, which the review adds (rewriting the manifest
whole under DEST's lock, the header and each line one cell longer). A sort appending to
such a manifest leaves that cell empty in its lines, and reads the manifest as before.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from tensorguess.classify.prediction import Prediction, Scorer
from tensorguess.classify.task import task_of
from tensorguess.data.dataset import UNTAGGED
from tensorguess.errors import TensorguessError
from tensorguess.files import file_digest, folder_lock, make_folder, sync_directory
from tensorguess.progress import progress_bar

MANIFEST = "manifest.csv"
# Copies between fsyncs of DEST's folder and the manifest: one pair per batch rather than
# per copy (each costs a journal commit); a power cut's lost lines are recovered as orphans.
SYNC_EVERY = 64
MANIFEST_COLUMNS = ["source", "destination", "label", "score", "sha256"]
LABELS, COPIES = "labels", "copies"
# The last column, once tensorguess review has recorded a person's label for a copy.
REVIEWED_LABEL = "reviewed_label"
# A multi-label model's manifest: the labels given, and every name of the copy.
MULTI_LABEL_COLUMNS = [LABELS, COPIES]
UNSURE = "unsure"
UNKNOWN = "unknown"
RECOVERED = "recovered"
_TEMPORARY = ".tmp-sort-"
# Path separators and control characters (C0, DEL, C1, Unicode line and paragraph separators).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029/\\]")
# Room for "-0.99636", a "-123456" counter and an extension within 255 bytes (NAME_MAX).
_LABEL_BYTES = 180
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,15}")
# Source names keep invalid UTF-8 as surrogates; the manifest writes them back as the same bytes.
_ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}
# Image formats whose usual extension is not their name in lower case.
_FORMAT_SUFFIXES = {"JPEG": ".jpg", "TIFF": ".tif", "HEIF": ".heic"}
# os.link's answers on file systems without hard links (exFAT, some network shares, FUSE),
# or that refuse this one: the copy is then named by an exclusive create and a rename.
_NO_HARD_LINKS = {
    errno.EPERM,
    errno.ENOTSUP,
    errno.EOPNOTSUPP,
    errno.ENOSYS,
    errno.EXDEV,
    errno.EMLINK,
}


class Copied(NamedTuple):
    """One image sorted: where it came from, where its copy is, and the label it got."""

    source: Path
    destination: Path
    label: str
    score: float


@dataclass
class SortReport:
    """What `sort_folder` did: copies made, images skipped (with the reason) and the rest.

    `placed`, by each copy's `destination`: the labels a multi-label model gave it (None for
    single-label) and every name of the copy; `columns`, the manifest's own columns."""

    copied: list[Copied] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    already_sorted: list[tuple[Path, Path]] = field(default_factory=list)
    unsure: int = 0
    unknown: int = 0
    moved: int = 0
    manifest: Path | None = None
    placed: dict[Path, tuple[tuple[str, ...] | None, list[Path]]] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """How many images went to each label (multi-label: to each label's folder, and to
        `untagged`)."""
        counts: dict[str, int] = {}
        for copy in self.copied:
            given, _ = self.placed.get(copy.destination, (None, []))
            for label in (copy.label,) if given is None else given or (UNTAGGED,):
                counts[label] = counts.get(label, 0) + 1
        return dict(sorted(counts.items()))

    def to_json(self) -> dict:
        """The report as `sort --json` prints it (multi-label: each copy's labels and names)."""
        return {
            "sorted": [
                {
                    "source": str(copy.source),
                    "destination": str(copy.destination),
                    "label": copy.label,
                    "score": copy.score,
                    **self._placement(copy.destination),
                }
                for copy in self.copied
            ],
            "skipped": [{"path": str(path), "reason": reason} for path, reason in self.skipped],
            "already_sorted": [
                {"source": str(source), "destination": str(destination)}
                for source, destination in self.already_sorted
            ],
            "manifest": str(self.manifest),
        }

    def _placement(self, destination: Path) -> dict:
        given, copies = self.placed.get(destination, (None, []))
        if given is None:
            return {}
        return {"labels": list(given), "copies": [str(copy) for copy in copies]}


def safe_name_part(text: str) -> str:
    """A label made safe inside a file name: no separators, control characters or `..`.

    A leading dot would hide the file, so it becomes `_`; a long label is cut (whole
    characters) so that the final name fits in 255 bytes.
    """
    cleaned = _UNSAFE.sub("_", text).strip()
    cleaned = re.sub(r"^\.", "_", cleaned)
    cleaned = cleaned.encode("utf-8", "surrogateescape")[:_LABEL_BYTES].decode("utf-8", "ignore")
    return "_" if cleaned in ("", ".", "..") else cleaned


def safe_suffix(suffix: str) -> str:
    """The source's extension, lower-cased, if it is a plain one (`.jpg`); otherwise none."""
    return suffix.lower() if _SUFFIX.fullmatch(suffix) else ""


def sorted_name(
    label: str, score: float, suffix: str, unsure: bool = False, unknown: bool = False
) -> str:
    """`elsa-0.99636.jpg`: the label, the score with five decimals, the source's extension;
    `unknown-elsa-0.99636.jpg` or `unsure-...` when so (unknown wins)."""
    prefix = f"{UNKNOWN}-" if unknown else f"{UNSURE}-" if unsure else ""
    return f"{prefix}{safe_name_part(label)}-{score:.5f}{safe_suffix(suffix)}"


def list_sources(source: Path, destination: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The files of SRC to classify (top level, not hidden) and the entries passed over."""
    if not source.is_dir():
        raise TensorguessError(f"{source}: folder not found; give the folder of images to sort")
    target = destination.resolve()
    if source.resolve() == target:
        raise TensorguessError(f"{destination}: DEST is SRC; give another folder for the copies")
    files, skipped = [], []
    for entry in sorted(source.iterdir()):
        if entry.resolve() == target:
            continue
        if entry.name.startswith("."):
            skipped.append((entry, "hidden file"))
        elif entry.is_dir():
            skipped.append((entry, "sub-folder (only the top level of SRC is sorted)"))
        elif entry.is_file():
            files.append(entry)
        else:
            skipped.append((entry, "not a regular file"))
    return files, skipped


class SourceChanged(Exception):
    """The source changed between the listing of SRC and its copy; it is left for a rerun."""


class Fingerprint(NamedTuple):
    """What tells, without reading it, that a file is the one seen before: inode, size and
    modification time (not the change time, which removing another hard link of the same
    photo moves)."""

    device: int
    inode: int
    size: int
    modified: int

    @classmethod
    def of(cls, status: os.stat_result) -> Fingerprint:
        """The fingerprint of a `stat` (or `fstat`) result."""
        return cls(status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


class CopyMade(NamedTuple):
    """A verified copy: its name in DEST, and the SHA-256 of its bytes (the source's)."""

    path: Path
    digest: str


class FreeNames:
    """Free names in DEST: `elsa-0.99636.jpg`, then `elsa-0.99636-1.jpg`, `-2`...

    It remembers how far each name's count got, so a thousand photos that share a label
    and a score cost a thousand attempts, not half a million.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._next: dict[str, int] = {}

    def claim(self, temporary: Path, name: str) -> Path:
        """Give `temporary` the first free name from `name` on; never replace a file."""
        return self._first_free(name, lambda candidate: _claim(temporary, candidate))

    def _first_free(self, name: str, take) -> Path:
        """The first of `name`, `stem-1.ext`, ... that `take(candidate)` manages to take."""
        stem, suffix = os.path.splitext(name)
        for attempt in range(self._next.get(name, 0), 1_000_000):
            candidate = self.folder / (name if attempt == 0 else f"{stem}-{attempt}{suffix}")
            if take(candidate):
                self._next[name] = attempt + 1
                return candidate
        raise TensorguessError(f"{self.folder}: no free name for {name}")

    def move(self, path: Path, name: str) -> Path:
        """Rename `path` (in this folder) to the first free name from `name` on, never
        replacing a file; a kill halfway leaves it under both names (one file)."""
        claimed = self.claim(path, name)
        path.unlink(missing_ok=True)  # linked: the old name goes; renamed: it is gone already
        return claimed

    def adopt(self, path: Path, name: str) -> Path:
        """A killed run's copy under a name a fresh copy could have (`name`, or `name` with
        a count, in this folder), keeping its own name if that is one already."""
        stem, suffix = os.path.splitext(name)
        if path.parent == self.folder and re.fullmatch(
            rf"{re.escape(stem)}(?:-\d+)?{re.escape(suffix)}", path.name
        ):
            return path
        return self.move(path, name)

    def link(self, existing: Path, name: str) -> Path | None:
        """Give the file `existing` one more name here, a hard link at the first free name
        from `name` on; None where the file system has no hard links (or refuses this one)."""
        try:
            return self._first_free(name, lambda candidate: _link(existing, candidate))
        except _NoHardLink:
            return None


class _NoHardLink(Exception):
    """The file system refused a hard link."""


def _link(existing: Path, candidate: Path) -> bool:
    """Link `existing` to the name `candidate` unless that name is taken."""
    try:
        os.link(existing, candidate)
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno in _NO_HARD_LINKS:
            raise _NoHardLink from None
        raise
    return True


def copy_without_overwriting(
    source: Path,
    names: FreeNames,
    name: str,
    digest: str | None = None,
    listed: Fingerprint | None = None,
    scratch: Path | None = None,
) -> CopyMade:
    """Copy `source` into the folder of `names` as `name`, or `stem-1.ext`... if taken.

    The bytes are hashed as they are written (one read of the source, none of the copy).
    With `digest`, they must have that SHA-256; with `listed`, the source must still have
    that fingerprint once read; otherwise `SourceChanged`, and no copy is left. The copy is
    written under a temporary name in `scratch` (default: the folder of `names`).
    """
    handle, temporary_name = tempfile.mkstemp(prefix=_TEMPORARY, dir=scratch or names.folder)
    temporary = Path(temporary_name)
    try:
        hashed = hashlib.sha256()
        with open(source, "rb") as reading, os.fdopen(handle, "wb") as writing:
            for block in iter(lambda: reading.read(1 << 20), b""):
                hashed.update(block)
                writing.write(block)
            writing.flush()
            shutil.copystat(source, temporary)
            os.fsync(writing.fileno())  # on disk before the manifest (and --move) count on it
            read = Fingerprint.of(os.fstat(reading.fileno()))
        if (listed is not None and read != listed) or digest not in (None, hashed.hexdigest()):
            raise SourceChanged(source)
        return CopyMade(names.move(temporary, name), hashed.hexdigest())
    finally:
        temporary.unlink(missing_ok=True)


def _claim(temporary: Path, candidate: Path) -> bool:
    """Give `temporary` the name `candidate` unless that name is taken; never replace."""
    try:
        return _link(temporary, candidate)
    except _NoHardLink:
        pass
    # Reserve the name with an exclusive create, then move the copy over the empty file we
    # own (a kill in between leaves that empty file named like a copy, and the copy under
    # its temporary name: the next run removes the one and adopts the other).
    try:
        os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    os.replace(temporary, candidate)
    return True


class Manifest:
    """DEST/manifest.csv: source, destination, label, score, sha256, then one column per label.

    A multi-label model's has two more before the scores (`MULTI_LABEL_COLUMNS`): `labels`,
    those given, separated by spaces (none for an untagged photo), and `copies`, every name
    of the copy relative to DEST, separated by spaces, the one `destination` names first
    (`label` and `score` are then the best label's).

    A DEST may hold manifests of several models: a model appends to the one whose header
    matches its labels, and starts `manifest-1.csv`, `-2`, ... otherwise. Its own manifest
    is read once per run; the others only when DEST holds files it does not list.
    """

    def __init__(self, destination: Path, labels: Sequence[str], columns: Sequence[str] = ()):
        self.header = [*MANIFEST_COLUMNS, *columns, *labels]
        self.destination = destination
        self.path = self._free_path(destination)
        # (source, sha256) -> the names of its copy, relative to DEST
        self.sorted: dict[tuple[str, str], tuple[str, ...]] = {}
        self.sources: set[str] = set()
        self.listed = Listing()
        self.unsynced = 0
        if self.path.exists():
            _drop_cut_line(self.path)
        new = not self.path.exists() or self.path.stat().st_size == 0
        if not new:
            self.header = _header(self.path) or self.header  # with REVIEWED_LABEL, maybe
            self._read_sorted()
        self._stream = open(self.path, "a", newline="", **_ENCODING)
        self._writer = csv.writer(self._stream)
        if new:
            self._writer.writerow(self.header)
            self._stream.flush()
            self.unsynced += 1  # the header (and the file's name) go to disk with the first batch

    def _free_path(self, destination: Path) -> Path:
        for attempt in range(1_000_000):
            path = destination / (MANIFEST if attempt == 0 else f"manifest-{attempt}.csv")
            # One without a whole line: a power cut took the header of a manifest just begun.
            if (
                not path.exists()
                or not _has_a_line(path)
                or _header(path) in (self.header, [*self.header, REVIEWED_LABEL])
            ):
                return path
        raise TensorguessError(f"{destination}: no free manifest name")

    def _read_sorted(self) -> None:
        for row in _rows(self.path):
            names = self.listed.add(row)
            if len(row) == len(self.header) and row != self.header:
                self.sorted[(row[0], row[4])] = names
                self.sources.add(row[0])

    def lists(self, source: str) -> bool:
        """Whether a line lists this source (its resolved path), with whatever content."""
        return source in self.sources

    def sorted_copy(self, source: str, digest: str) -> Path | None:
        """Where this source (its resolved path) with this content was put, if it was."""
        names = self.sorted.get((source, digest))
        return None if not names else self.destination / names[0]

    def sorted_copies(self, source: str, digest: str) -> list[Path]:
        """Every name of the copy of this source with this content (none if not sorted)."""
        return [self.destination / name for name in self.sorted.get((source, digest), ())]

    def others(self) -> Listing:
        """What the other manifests of DEST (other models') list."""
        listing = Listing()
        for path in sorted(self.destination.glob("manifest*.csv")):
            if path != self.path:
                for row in _rows(path):
                    listing.add(row)
        return listing

    def add(
        self,
        source: Path,
        destination: Path,
        label: str,
        digest: str,
        scores: Sequence[float],
        columns: Sequence[str] = (),
    ) -> None:
        """Append one complete line and flush it, so a killed run keeps what it did
        (`sync` puts it on disk); `columns`: the values of the header's own columns."""
        best = max(scores)
        row = [
            str(source.resolve()),
            str(destination.resolve()),
            label,
            f"{best:.5f}",
            digest,
            *columns,
            *(f"{s:.5f}" for s in scores),
        ]
        row += [""] * (len(self.header) - len(row))  # no person's label yet
        self._writer.writerow(row)
        self._stream.flush()
        self.unsynced += 1
        self.sorted[(row[0], digest)] = self.listed.add(row)

    def sync(self, always: bool = False) -> None:
        """Put every line written so far on disk (`always`: lines of earlier runs too)."""
        if self.unsynced or always:
            os.fsync(self._stream.fileno())
            self.unsynced = 0

    def close(self) -> None:
        """Put the last lines on disk and close the file."""
        try:
            self.sync()
        finally:
            self._stream.close()


@dataclass
class Listing:
    """The copies some manifest lists: their names relative to DEST (`elsa-0.99636.jpg`,
    `shirt/shirt-0.93412.jpg`), and a name for each content."""

    names: set[str] = field(default_factory=set)
    copies: dict[str, str] = field(default_factory=dict)  # sha256 -> name
    _copies_column: int | None = None  # of the manifest being read (its header says)

    def add(self, row: list[str]) -> tuple[str, ...]:
        """Count one manifest line in (the header and cut lines too: harmless); its copy's
        names, the one `destination` names first. String operations alone: a large
        manifest has a hundred thousand lines."""
        if row[: len(MANIFEST_COLUMNS)] == MANIFEST_COLUMNS:
            self._copies_column = row.index(COPIES) if COPIES in row else None
        if len(row) < 2:
            return ()
        column = self._copies_column
        if column is not None and len(row) > column:
            names = tuple(row[column].split())
        else:
            names = (os.path.basename(row[1]),)
        self.names.update(names)
        if len(row) > 4 and names:
            self.copies.setdefault(row[4], names[0])
        return names


def _drop_cut_line(path: Path) -> None:
    """Remove a last line that a power cut left half-written, so the next line stays whole.

    Only the tail is read. (Its copy, if it was made, is then an orphan and adopted by the
    next run.)
    """
    with open(path, "rb+") as stream:
        end = stream.seek(0, os.SEEK_END)
        stream.seek(max(end - 1, 0))
        if stream.read(1) in (b"\n", b""):
            return
        block_end = end
        while block_end > 0:
            block_start = max(block_end - (1 << 16), 0)
            stream.seek(block_start)
            cut = stream.read(block_end - block_start).rfind(b"\n")
            if cut >= 0:
                stream.truncate(block_start + cut + 1)
                return
            block_end = block_start
        stream.truncate(0)


def _has_a_line(path: Path) -> bool:
    try:
        with open(path, "rb") as stream:
            return stream.readline().endswith(b"\n")
    except OSError:
        return True  # unreadable: not ours to begin again


def _rows(path: Path) -> Iterable[list[str]]:
    try:
        with open(path, newline="", **_ENCODING) as stream:
            yield from csv.reader(stream)
    except (OSError, csv.Error):
        return


def _header(path: Path) -> list[str] | None:
    return next(iter(_rows(path)), None)


def remove_verified_source(
    source: Path, copy: Path, digest: str, listed: Fingerprint, others: Sequence[Path] = ()
) -> str:
    """Delete `source` once its copy is verified (and the `others` names of it: each another
    name of the same file, or a copy verified likewise); the reason it stays, or "" when
    removed."""
    try:
        if Fingerprint.of(source.stat()) != listed:
            return "changed since it was copied; left in SRC"
        verified: set[tuple[int, int]] = set()
        for each in (copy, *others):
            status = each.stat()
            if (status.st_dev, status.st_ino) in verified:
                continue  # a hard link of a copy verified already: the same bytes
            if status.st_size != listed.size or file_digest(each) != digest:
                return f"its copy {each.name} does not match it; left in SRC"
            verified.add((status.st_dev, status.st_ino))
        source.unlink()
    except OSError as error:
        return f"could not be removed after copying ({error.strerror or error})"
    return ""


def sort_folder(
    classifier: Scorer,
    source: Path,
    destination: Path,
    batch_size: int = 64,
    move: bool = False,
    min_score: float = 0.0,
    unknown: bool = False,
) -> SortReport:
    """Classify every image in `source` and copy (or `move`) it into `destination`.

    Images whose best score is under `min_score` are named `unsure-<label>-<score>.<ext>`;
    with `unknown`, those unlike every training photo `unknown-<label>-<score>.<ext>`. A
    multi-label model's copies go into a folder per label (the module says how).
    """
    source, destination = Path(source), Path(destination)
    task = task_of(classifier)
    if min_score and task.multi_label:
        raise TensorguessError(
            f"{classifier.graph_path}: --min_score is for single-label models; a multi-label "
            "model gives each photo the labels over their own thresholds (tensorguess.json)"
        )
    if unknown and classifier.novelty_threshold is None:
        raise TensorguessError(
            f"{classifier.graph_path}: this model has no novelty score (an old tool's graph, "
            "or one trained before tensorguess had it), so --unknown cannot tell; train it "
            "again with train.sh, or sort without --unknown"
        )
    if destination.exists() and not destination.is_dir():
        raise TensorguessError(
            f"{destination}: DEST is a file, not a folder; give a folder for the sorted copies "
            "(it is created if missing)"
        )
    files, skipped = list_sources(source, destination)
    make_folder(destination)
    report = SortReport(skipped=skipped)
    with folder_lock(destination, "sort"):
        columns = MULTI_LABEL_COLUMNS if task.multi_label else []
        manifest = Manifest(destination, classifier.labels, columns)
        report.manifest = manifest.path
        report.columns = columns
        try:
            run = _SortRun(classifier, manifest, report, move, min_score, unknown)
            todo = run.take_stock(files)
            todo = run.recover(files, todo)
            run.settle()  # (--move) what earlier runs copied but did not get to remove
            run.sort(todo, batch_size)
            run.sort_temporaries(batch_size)
            run.settle()
        finally:
            manifest.close()
    return report


class _Naming(NamedTuple):
    """How a prediction names its copy: its best label and score (the manifest's), its
    places ((folder of DEST or "", name): the copy's, then its other names'), the labels a
    multi-label model gives it (None for single-label)."""

    label: str
    score: float
    places: list[tuple[str, str]]
    labels: tuple[str, ...] | None
    unsure: bool
    unknown: bool


@dataclass
class _Source:
    """A photo of SRC as it was when listed, its path as the manifest writes it, and its
    SHA-256 once known."""

    fingerprint: Fingerprint
    resolved: Path
    digest: str | None = None


@dataclass
class _Leftovers:
    """What killed runs left in DEST, sorted out by content against the sources."""

    orphans: dict[str, list[Path]] = field(default_factory=dict)  # sha256 -> copies to adopt
    half_written: dict[Path, list[Path]] = field(default_factory=dict)  # source -> temporaries
    unmatched: dict[Path, str] = field(default_factory=dict)  # temporary -> sha256


class _SortRun:
    """One sort into DEST, under its lock: the sources as listed, the copies waiting for
    their fsyncs, and what killed runs left."""

    def __init__(
        self,
        classifier: Scorer,
        manifest: Manifest,
        report: SortReport,
        move: bool,
        min_score: float,
        unknown: bool,
    ) -> None:
        self.classifier = classifier
        self.manifest = manifest
        self.destination = manifest.destination
        self.report = report
        self.move = move
        self.min_score = min_score
        self.unknown = unknown
        self.task = task_of(classifier)
        self.folders: dict[str, FreeNames] = {"": FreeNames(self.destination)}
        self.sources: dict[Path, _Source] = {}
        self.leftovers = _Leftovers()
        self.others = Listing()  # what the other manifests list, read when needed
        # Listed since the last fsyncs, waiting for them: (source, every name of its copy).
        self.settling: list[tuple[Path, list[Path]]] = []

    def _names(self, folder: str) -> FreeNames:
        """The free names of a folder of DEST ("": DEST itself), made when first needed."""
        if folder not in self.folders:
            make_folder(self.destination / folder)
            self.folders[folder] = FreeNames(self.destination / folder)
        return self.folders[folder]

    def _relative(self, path: Path) -> str:
        """`path`'s name as manifests list it: relative to DEST."""
        return path.relative_to(self.destination).as_posix()

    def _skip(self, path: Path, reason: str) -> None:
        self.report.skipped.append((path, reason))

    def _hash(self, path: Path) -> bool:
        """Hash a source now; False (and it is skipped) when it cannot be read."""
        try:
            self.sources[path].digest = file_digest(path)
        except OSError as error:
            self._skip(path, f"cannot read ({error.strerror or error})")
            return False
        return True

    def take_stock(self, files: list[Path]) -> list[Path]:
        """The sources to sort; those an earlier run sorted are reported and, with --move,
        wait for the first settle to be removed."""
        todo = []
        for path in files:
            try:
                source = self.sources[path] = _Source(Fingerprint.of(path.stat()), path.resolve())
            except OSError as error:
                self._skip(path, f"cannot read ({error.strerror or error})")
                continue
            if not self.manifest.lists(str(source.resolved)):
                todo.append(path)  # hashed as it is copied
                continue
            if not self._hash(path):
                continue
            earlier = self.manifest.sorted_copies(str(source.resolved), str(source.digest))
            if not earlier:
                todo.append(path)  # changed since it was sorted
                continue
            self.report.already_sorted.append((path, earlier[0]))
            if self.move:  # a killed --move run copied it but did not get to remove it
                self.settling.append((path, earlier))
        return todo

    def recover(self, files: list[Path], todo: list[Path]) -> list[Path]:
        """Sort out what killed runs left in DEST (the module's docstring says how); the
        sources still to sort, all hashed when there was anything to sort out."""
        entries = sorted(self.destination.iterdir())
        temporaries = [entry for entry in entries if entry.name.startswith(_TEMPORARY)]
        for folder in self.task.folders(self.classifier.labels):
            if (self.destination / safe_name_part(folder)).is_dir():
                entries += sorted((self.destination / safe_name_part(folder)).iterdir())
        ours = _copy_name_pattern(self.classifier.labels)
        unlisted = [
            entry
            for entry in entries
            if ours.fullmatch(entry.name)
            and self._relative(entry) not in self.manifest.listed.names
        ]
        if unlisted or temporaries:
            self.others = self.manifest.others()
            unlisted = [
                entry for entry in unlisted if self._relative(entry) not in self.others.names
            ]
        if not unlisted and not temporaries:
            return todo
        todo = [path for path in todo if self.sources[path].digest or self._hash(path)]
        wanted = {str(self.sources[path].digest) for path in todo}
        self._gather_orphans(unlisted)
        for temporary in temporaries:
            self._sort_out_temporary(temporary, entries, wanted, files)
        return todo

    def _sorted_already(self, temporary: Path, digest: str) -> bool:
        """Remove `temporary` if a manifest lists a copy that still holds its content."""
        listed = self.manifest.listed.copies.get(digest) or self.others.copies.get(digest)
        if listed is None or not _holds(self.destination / listed, digest):
            return False
        temporary.unlink(missing_ok=True)
        return True

    def _gather_orphans(self, unlisted: list[Path]) -> None:
        seen: set[tuple[int, int]] = set()
        for entry in unlisted:
            try:
                status = entry.lstat()
                if not stat.S_ISREG(status.st_mode):
                    continue
                if status.st_size == 0 or (status.st_dev, status.st_ino) in seen:
                    entry.unlink()  # an empty reserved name, or a second name of one file
                    continue
                seen.add((status.st_dev, status.st_ino))
                self.leftovers.orphans.setdefault(file_digest(entry), []).append(entry)
            except OSError:
                continue  # unreadable: left as it is

    def _sort_out_temporary(
        self,
        temporary: Path,
        entries: list[Path],
        wanted: set[str],
        files: list[Path],
    ) -> None:
        try:
            status = temporary.lstat()
            if not stat.S_ISREG(status.st_mode):
                return
            if status.st_size == 0 or _another_name(temporary, status, entries):
                temporary.unlink()  # holds nothing, or its copy has its name already
                return
            digest = file_digest(temporary)
        except OSError:
            return  # unreadable: left as it is
        if digest in wanted:
            self.leftovers.orphans.setdefault(digest, []).append(temporary)
            return
        if self._sorted_already(temporary, digest):
            return
        for path in files:
            source = self.sources.get(path)
            if source and source.fingerprint.size > status.st_size and _begins(path, temporary):
                self.leftovers.half_written.setdefault(path, []).append(temporary)
                return
        self.leftovers.unmatched[temporary] = digest

    def sort(self, todo: list[Path], batch_size: int) -> None:
        """Classify the sources and give each its copy (made, or adopted from a killed run)."""
        with progress_bar(len(todo), "Sorting", unit="img") as bar:
            for prediction in self.classifier.classify(todo, batch_size):
                bar.update(1)
                if prediction.scores is None:
                    self._skip(prediction.path, prediction.problem)
                    continue
                self._sort_one(prediction)
                if max(self.manifest.unsynced, len(self.settling)) >= SYNC_EVERY:
                    self.settle()

    def _naming(self, prediction: Prediction, suffix: str) -> _Naming:
        assert prediction.scores is not None
        label, score = prediction.ranked(self.classifier.labels, 1)[0]
        unknown = self.unknown and bool(prediction.unknown)
        unsure = score < self.min_score and not unknown
        places = [
            (
                safe_name_part(place.folder) if place.folder else "",
                sorted_name(place.label, place.score, suffix, unsure, unknown),
            )
            for place in self.task.places(prediction.scores, self.classifier.labels)
        ]
        return _Naming(label, score, places, prediction.labels, unsure, unknown)

    def _list(
        self,
        source: Path,
        copies: list[Path],
        naming: _Naming,
        digest: str,
        prediction: Prediction,
    ) -> None:
        assert prediction.scores is not None
        columns = []
        if self.report.columns:  # multi-label: the labels given, and every name of the copy
            columns = [
                " ".join(naming.labels or ()),
                " ".join(self._relative(copy) for copy in copies),
            ]
        self.manifest.add(source, copies[0], naming.label, digest, prediction.scores, columns)
        self.report.copied.append(Copied(source, copies[0], naming.label, naming.score))
        self.report.placed[copies[0]] = (naming.labels, copies)
        self.report.unsure += naming.unsure
        self.report.unknown += naming.unknown

    def _place(self, copy: Path, naming: _Naming, digest: str, adopt: bool) -> list[Path]:
        """Give `copy` (a temporary, or when `adopt` a killed run's copy) its first name, then
        its other names: every name of the copy, the first first."""
        (folder, name), *_ = naming.places
        names = self._names(folder)
        first = names.adopt(copy, name) if adopt else names.move(copy, name)
        return [first, *self._other_names(first, naming, digest)]

    def _other_names(self, first: Path, naming: _Naming, digest: str) -> list[Path]:
        """The copy `first`'s other places (a multi-label photo's other labels): hard links
        where the file system allows, else copies; a killed run's copy of the same content
        already in a place is kept as its name there."""
        made = []
        for folder, name in naming.places[1:]:
            names = self._names(folder)
            orphans = self.leftovers.orphans.get(digest, [])
            here = [orphan for orphan in orphans if orphan.parent == names.folder]
            if here:  # copied there by a killed run on a file system without hard links
                orphans.remove(here[0])
                made.append(names.adopt(here[0], name))
                continue
            linked = names.link(first, name)
            if linked is None:
                made.append(
                    copy_without_overwriting(
                        first, names, name, digest, scratch=self.destination
                    ).path
                )
            else:
                made.append(linked)
        return made

    def _sort_one(self, prediction: Prediction) -> None:
        path = prediction.path
        source = self.sources[path]
        naming = self._naming(prediction, path.suffix)
        orphans = self.leftovers.orphans.get(str(source.digest))
        try:
            if orphans:  # a killed run's copy of this very content: adopted, nothing copied
                copies = self._place(orphans.pop(0), naming, str(source.digest), adopt=True)
            else:
                (folder, name), *_ = naming.places
                copied = copy_without_overwriting(
                    path,
                    self._names(folder),
                    name,
                    source.digest,
                    source.fingerprint,
                    scratch=self.destination,
                )
                source.digest = copied.digest
                copies = [copied.path, *self._other_names(copied.path, naming, copied.digest)]
        except SourceChanged:
            self._skip(path, "changed while it was copied; run again")
            return
        except OSError as error:
            raise TensorguessError(
                f"{self.destination}: cannot write the copy of {path.name} "
                f"({error.strerror or error}); nothing is lost: fix that and run again"
            ) from None
        self._list(path, copies, naming, str(source.digest), prediction)
        if self.move:
            self.settling.append((path, copies))

    def sort_temporaries(self, batch_size: int) -> None:
        """Keep the temporaries of no source as copies of their own: classified, named and
        listed, or, when they cannot be read as images, named `recovered-*`."""
        unmatched = self.leftovers.unmatched
        for digest, paths in self.leftovers.orphans.items():
            for path in paths:  # not adopted: their source was skipped, or had one copy already
                if path.name.startswith(_TEMPORARY) and not self._sorted_already(path, digest):
                    unmatched[path] = digest
        if not unmatched:
            return
        for prediction in self.classifier.classify(list(unmatched), batch_size):
            temporary = prediction.path
            digest = unmatched[temporary]
            suffix = _image_suffix(temporary)
            try:
                if prediction.scores is None:
                    recovered = f"{RECOVERED}-{digest[:16]}{suffix}"
                    kept = self.folders[""].move(temporary, recovered)
                    self._skip(
                        temporary,
                        f"a killed run's copy of a photo no longer in SRC, unreadable as an "
                        f"image ({prediction.problem}); kept as {kept.name}",
                    )
                    continue
                naming = self._naming(prediction, suffix)
                copies = self._place(temporary, naming, digest, adopt=False)
            except OSError as error:
                raise TensorguessError(
                    f"{temporary}: cannot name this copy a killed run left "
                    f"({error.strerror or error}); nothing is lost: fix that and run again"
                ) from None
            self._list(temporary, copies, naming, digest, prediction)

    def settle(self) -> None:
        """fsync DEST's folder, then the manifest, then do what waited for them: remove the
        sources (--move) listed since, and the half-written temporaries of listed sources."""
        if self.settling or self.manifest.unsynced:
            try:
                for names in self.folders.values():  # DEST first: its label folders' names
                    sync_directory(names.folder)
                unsynced = ""
            except OSError as error:
                unsynced = f"left in SRC: {self.destination} cannot be synced to disk " + (
                    f"({error.strerror or error})"
                )
            self.manifest.sync(always=bool(self.settling))
            for path, (copy, *others) in self.settling:
                source = self.sources[path]
                reason = unsynced or remove_verified_source(
                    path, copy, str(source.digest), source.fingerprint, others
                )
                if reason:
                    self._skip(path, reason)
                else:
                    self.report.moved += 1
            self.settling.clear()
        for path in list(self.leftovers.half_written):
            source = self.sources[path]
            if source.digest and self.manifest.sorted_copy(str(source.resolved), source.digest):
                for temporary in self.leftovers.half_written.pop(path):
                    temporary.unlink(missing_ok=True)


def _copy_name_pattern(labels: Sequence[str]) -> re.Pattern[str]:
    """The names our copies of photos of these labels get (`sorted_name`, with a count)."""
    names = "|".join(re.escape(safe_name_part(label)) for label in labels)
    return re.compile(
        rf"(?:(?:{UNSURE}|{UNKNOWN})-)?(?:{names})-\d\.\d{{5}}(?:-\d+)?(?:\.[a-z0-9]+)?"
    )


def _another_name(path: Path, status: os.stat_result, entries: list[Path]) -> bool:
    """Whether another entry of the folder is the same file as `path`."""
    if status.st_nlink < 2:
        return False
    for entry in entries:
        try:
            other = entry.lstat()
        except OSError:
            continue
        if entry != path and (other.st_dev, other.st_ino) == (status.st_dev, status.st_ino):
            return True
    return False


def _holds(path: Path, digest: str) -> bool:
    """Whether `path` still holds bytes of this SHA-256."""
    try:
        return file_digest(path) == digest
    except OSError:
        return False


def _begins(whole: Path, part: Path) -> bool:
    """Whether the bytes of `part` are the first bytes of `whole`."""
    try:
        with open(whole, "rb") as longer, open(part, "rb") as shorter:
            for block in iter(lambda: shorter.read(1 << 16), b""):
                if longer.read(len(block)) != block:
                    return False
    except OSError:
        return False
    return True


def _image_suffix(path: Path) -> str:
    """The usual extension of the image format of `path` (`.jpg`), or "" when it has none."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            kind = image.format or ""
    except Exception:  # noqa: BLE001  (a damaged file is simply not an image here)
        return ""
    return safe_suffix(_FORMAT_SUFFIXES.get(kind, f".{kind.lower()}")) if kind else ""
