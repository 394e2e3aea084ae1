"""guessDir: classify every image of SRC and copy it into DEST as <label>-<score>.<ext>.

With `--unknown`, an image unlike every training photo (novelty.py: its score past the
model's threshold) is named `unknown-<label>-<score>.<ext>`; with `--min_score`, one whose
best score is under it `unsure-<label>-<score>.<ext>` (unknown wins when both apply).

Users trust this with their only copy of a folder, so:

- Nothing is ever overwritten. A copy is written in full under a temporary name, hashed
  as it is written and checked against the SHA-256 the source had when it was listed,
  fsynced, then linked to a free final name (`os.link` fails rather than replace), so two
  files can never claim one name.
- SRC is only read, unless `--move` is given; then a source is deleted only after its
  copy in DEST is verified (same size and SHA-256) and listed in the manifest, and only
  if the source has not changed since it was hashed.
- Every image is sorted exactly once, across reruns and killed runs. The manifest
  (DEST/manifest.csv) gains one complete line per copy, holding the source's absolute
  path and SHA-256, written through to the system as soon as its copy has its name (a
  killed process loses none); a rerun skips what it lists. The lines are fsynced once
  per `SYNC_EVERY` copies, at the end, and always before a `--move` removes a source.
  A run killed after linking a copy but before writing its line leaves an *orphan*: a
  file named like our copies that no manifest lists. A rerun hashes those (there are none
  after a clean run) and adopts an orphan with the same content instead of copying the
  source again. A power cut can take the lines written since the last fsync, or leave a
  half-written last line (dropped): their copies, each fsynced before its line was
  written, become such orphans too. Temporaries of killed runs are removed.
- One sort at a time writes into a DEST (`.tensorguess.lock`, removed at the end).
- The predictions come from a classifier here or from Ray workers (`--ray`, cluster/);
  either way only this loop, on this machine, writes into DEST.
- Names derived from labels and source names cannot leave DEST: separators, `..`,
  control characters and leading dots are replaced, and long names are cut to fit.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from tensorguess.classify.prediction import Scorer
from tensorguess.errors import TensorguessError
from tensorguess.files import file_digest, folder_lock, make_folder
from tensorguess.progress import progress_bar

MANIFEST = "manifest.csv"
# Manifest lines between fsyncs: one per batch of copies rather than one per copy (each
# costs a journal commit); a power cut's lost lines are recovered as orphans.
SYNC_EVERY = 64
MANIFEST_COLUMNS = ["source", "destination", "label", "score", "sha256"]
UNSURE = "unsure"
UNKNOWN = "unknown"
_TEMPORARY = ".tmp-sort-"
# Path separators and control characters (C0, DEL, C1, Unicode line and paragraph separators).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029/\\]")
# Room for "-0.99636", a "-123456" counter and an extension within 255 bytes (NAME_MAX).
_LABEL_BYTES = 180
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,15}")
# Source names keep invalid UTF-8 as surrogates; the manifest writes them back as the same bytes.
_ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}


class Copied(NamedTuple):
    """One image sorted: where it came from, where its copy is, and the label it got."""

    source: Path
    destination: Path
    label: str
    score: float


@dataclass
class SortReport:
    """What `sort_folder` did: copies made, images skipped (with the reason) and the rest."""

    copied: list[Copied] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    already_sorted: list[tuple[Path, Path]] = field(default_factory=list)
    unsure: int = 0
    unknown: int = 0
    moved: int = 0
    manifest: Path | None = None

    def counts(self) -> dict[str, int]:
        """How many images went to each label."""
        counts: dict[str, int] = {}
        for copy in self.copied:
            counts[copy.label] = counts.get(copy.label, 0) + 1
        return dict(sorted(counts.items()))

    def to_json(self) -> dict:
        """The report as `sort --json` prints it."""
        return {
            "sorted": [
                {
                    "source": str(copy.source),
                    "destination": str(copy.destination),
                    "label": copy.label,
                    "score": copy.score,
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
    if source.resolve() == destination.resolve():
        raise TensorguessError(f"{destination}: DEST is SRC; give another folder for the copies")
    files, skipped = [], []
    for entry in sorted(source.iterdir()):
        if entry.resolve() == destination.resolve():
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
    """The source's bytes changed while it was being copied; it is left for a rerun."""


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
        stem, suffix = os.path.splitext(name)
        for attempt in range(self._next.get(name, 0), 1_000_000):
            candidate = self.folder / (name if attempt == 0 else f"{stem}-{attempt}{suffix}")
            if _claim(temporary, candidate):
                self._next[name] = attempt + 1
                return candidate
        raise TensorguessError(f"{self.folder}: no free name for {name}")


def copy_without_overwriting(
    source: Path, names: FreeNames, name: str, digest: str | None = None
) -> Path:
    """Copy `source` into the folder of `names` as `name`, or `stem-1.ext`... if taken.

    With `digest`, the bytes copied are hashed as they are written (one read of the
    source, none of the copy) and checked against it before the copy gets its name.
    """
    handle, temporary_name = tempfile.mkstemp(prefix=_TEMPORARY, dir=names.folder)
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
        if digest is not None and hashed.hexdigest() != digest:
            raise SourceChanged(source)
        return names.claim(temporary, name)
    finally:
        temporary.unlink(missing_ok=True)


def _claim(temporary: Path, candidate: Path) -> bool:
    """Give `temporary` the name `candidate` unless that name is taken; never replace."""
    try:
        os.link(temporary, candidate)
        return True
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
    # A file system without hard links (exFAT, some network shares): reserve the name
    # with an exclusive create, then move the copy over the empty file we own.
    try:
        os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    os.replace(temporary, candidate)
    return True


class Manifest:
    """DEST/manifest.csv: source, destination, label, score, sha256, then one column per label.

    A DEST may hold manifests of several models: a model appends to the one whose header
    matches its labels, and starts `manifest-1.csv`, `-2`, ... otherwise.
    """

    def __init__(self, destination: Path, labels: Sequence[str]):
        self.header = [*MANIFEST_COLUMNS, *labels]
        self.destination = destination
        self.path = self._free_path(destination)
        self.sorted: dict[tuple[str, str], Path] = {}
        self.unsynced = 0
        new = not self.path.exists()
        if not new:
            _drop_cut_line(self.path)
            self._read_sorted()
        self._stream = open(self.path, "a", newline="", **_ENCODING)
        self._writer = csv.writer(self._stream)
        if new:
            self._writer.writerow(self.header)
            self._stream.flush()

    def _free_path(self, destination: Path) -> Path:
        for attempt in range(1_000_000):
            path = destination / (MANIFEST if attempt == 0 else f"manifest-{attempt}.csv")
            if not path.exists() or _header(path) == self.header:
                return path
        raise TensorguessError(f"{destination}: no free manifest name")

    def _read_sorted(self) -> None:
        for row in _rows(self.path):
            if len(row) == len(self.header):
                self.sorted[(row[0], row[4])] = self.destination / Path(row[1]).name

    def sorted_copy(self, source: Path, digest: str) -> Path | None:
        """Where an earlier run put this source with this content, if one did."""
        return self.sorted.get((str(source.resolve()), digest))

    def add(
        self, source: Path, destination: Path, label: str, digest: str, scores: Sequence[float]
    ) -> None:
        """Append one complete line and flush it, so a killed run keeps what it did
        (`sync` puts it on disk)."""
        best = max(scores)
        row = [
            str(source.resolve()),
            str(destination.resolve()),
            label,
            f"{best:.5f}",
            digest,
            *(f"{s:.5f}" for s in scores),
        ]
        self._writer.writerow(row)
        self._stream.flush()
        self.unsynced += 1
        self.sorted[(row[0], digest)] = destination

    def sync(self) -> None:
        """Put every line written so far on disk."""
        if self.unsynced:
            os.fsync(self._stream.fileno())
            self.unsynced = 0

    def close(self) -> None:
        """Put the last lines on disk and close the file."""
        try:
            self.sync()
        finally:
            self._stream.close()


def _drop_cut_line(path: Path) -> None:
    """Remove a last line that a power cut left half-written, so the next line stays whole.

    (Its copy, if it was made, is then an orphan and adopted by the next run.)
    """
    with open(path, "rb+") as stream:
        data = stream.read()
        if data and not data.endswith(b"\n"):
            stream.truncate(data.rfind(b"\n") + 1)


def _rows(path: Path) -> Iterable[list[str]]:
    try:
        with open(path, newline="", **_ENCODING) as stream:
            yield from csv.reader(stream)
    except (OSError, csv.Error):
        return


def _header(path: Path) -> list[str] | None:
    return next(iter(_rows(path)), None)


def orphan_copies(destination: Path, labels: Sequence[str]) -> dict[str, Path]:
    """Copies a killed run made but never listed: {sha256: path}. Empty after clean runs."""
    listed = set()
    for manifest in destination.glob("manifest*.csv"):
        listed.update(Path(row[1]).name for row in _rows(manifest) if len(row) > 1)
    names = "|".join(re.escape(safe_name_part(label)) for label in labels)
    ours = re.compile(
        rf"(?:(?:{UNSURE}|{UNKNOWN})-)?(?:{names})-\d\.\d{{5}}(?:-\d+)?(?:\.[a-z0-9]+)?"
    )
    orphans = {}
    for entry in destination.iterdir():
        if entry.name not in listed and ours.fullmatch(entry.name) and entry.is_file():
            try:
                orphans[file_digest(entry)] = entry
            except OSError:
                continue
    return orphans


def remove_dead_temporaries(destination: Path) -> None:
    """Delete the temporary copies of killed sorts (safe under DEST's lock: no sort is running)."""
    for entry in destination.glob(f"{_TEMPORARY}*"):
        entry.unlink(missing_ok=True)


def remove_verified_source(source: Path, copy: Path, digest: str, size: int, modified: int) -> str:
    """Delete `source` once its copy is verified; the reason it stays, or "" when removed."""
    try:
        stat = source.stat()
        if (stat.st_size, stat.st_mtime_ns) != (size, modified):
            return "changed since it was copied; left in SRC"
        if copy.stat().st_size != size or file_digest(copy) != digest:
            return f"its copy {copy.name} does not match it; left in SRC"
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
    with `unknown`, those unlike every training photo `unknown-<label>-<score>.<ext>`.
    """
    source, destination = Path(source), Path(destination)
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
    labels = classifier.labels
    with folder_lock(destination, "sort"):
        remove_dead_temporaries(destination)
        manifest = Manifest(destination, labels)
        report.manifest = manifest.path
        try:
            _sort_into(classifier, files, manifest, report, batch_size, move, min_score, unknown)
        finally:
            manifest.close()
    return report


def _sort_into(
    classifier: Scorer,
    files: list[Path],
    manifest: Manifest,
    report: SortReport,
    batch_size: int,
    move: bool,
    min_score: float,
    unknown: bool,
) -> None:
    destination = manifest.destination
    todo, known = [], {}
    for path in files:
        try:
            stat = path.stat()
            digest = file_digest(path)
        except OSError as error:
            report.skipped.append((path, f"cannot read ({error.strerror or error})"))
            continue
        known[path] = (digest, stat.st_size, stat.st_mtime_ns)
        earlier = manifest.sorted_copy(path, digest)
        if earlier is None:
            todo.append(path)
            continue
        report.already_sorted.append((path, earlier))
        if move:  # a killed --move run copied it but did not get to remove it
            reason = remove_verified_source(path, earlier, *known[path])
            if reason:
                report.skipped.append((path, reason))
            else:
                report.moved += 1
    orphans = orphan_copies(destination, classifier.labels)
    names = FreeNames(destination)
    copied_sources: list[tuple[Path, Path]] = []  # --move: removed once their lines are synced

    def settle() -> None:
        manifest.sync()
        for path, copied in copied_sources:
            reason = remove_verified_source(path, copied, *known[path])
            if reason:
                report.skipped.append((path, reason))
            else:
                report.moved += 1
        copied_sources.clear()

    with progress_bar(len(todo), "Sorting", unit="img") as bar:
        for prediction in classifier.classify(todo, batch_size):
            bar.update(1)
            path = prediction.path
            if prediction.scores is None:
                report.skipped.append((path, prediction.problem))
                continue
            digest = known[path][0]
            label, score = prediction.ranked(classifier.labels, 1)[0]
            novel = unknown and bool(prediction.unknown)
            unsure = score < min_score and not novel
            if digest in orphans:
                copied = orphans.pop(digest)  # a killed run's copy: adopt it, copy nothing
            else:
                name = sorted_name(label, score, path.suffix, unsure, novel)
                try:
                    copied = copy_without_overwriting(path, names, name, digest)
                except SourceChanged:
                    report.skipped.append((path, "changed while it was copied; run again"))
                    continue
                except OSError as error:
                    raise TensorguessError(
                        f"{destination}: cannot write the copy of {path.name} "
                        f"({error.strerror or error}); nothing is lost: fix that and run again"
                    ) from None
            manifest.add(path, copied, label, digest, prediction.scores)
            report.copied.append(Copied(path, copied, label, score))
            report.unsure += unsure
            report.unknown += novel
            if move:
                copied_sources.append((path, copied))
            if manifest.unsynced >= SYNC_EVERY:
                settle()
        settle()
