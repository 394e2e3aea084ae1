"""guessDir: classify every image of SRC and copy it into DEST as <label>-<score>.<ext>.

Nothing is ever overwritten: a copy is written under a temporary name and then linked
to a free final name (`os.link` fails rather than replace), so two files can never
claim one name. SRC is only read. The manifest gains one complete line per copy.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tensorguess.errors import TensorguessError
from tensorguess.predict import Classifier, Prediction
from tensorguess.progress import progress_bar

MANIFEST = "manifest.csv"
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


@dataclass
class SortReport:
    """What `sort_folder` did: copies made (source, destination, label, score) and skips."""

    copied: list[tuple[Path, Path, str, float]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    manifest: Path | None = None


def safe_name_part(text: str) -> str:
    """A label made safe inside a file name: no separators, control characters or `..`."""
    cleaned = _UNSAFE.sub("_", text).strip()
    return "_" if cleaned in ("", ".", "..") else cleaned


def sorted_name(label: str, score: float, suffix: str) -> str:
    """`elsa-0.99636.jpg`: the label, the score with five decimals, the source's extension."""
    return f"{safe_name_part(label)}-{score:.5f}{suffix.lower()}"


def list_sources(source: Path, destination: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The files of SRC to classify (top level, not hidden) and the entries passed over."""
    if not source.is_dir():
        raise TensorguessError(f"{source}: folder not found; give the folder of images to sort")
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


def copy_without_overwriting(source: Path, destination_dir: Path, name: str) -> Path:
    """Copy `source` to `destination_dir/name`, or `stem-1.ext`, `stem-2.ext`... if taken."""
    stem, suffix = os.path.splitext(name)
    temporary = destination_dir / f".tmp-{os.getpid()}-{name}"
    shutil.copy2(source, temporary)
    try:
        for attempt in range(1_000_000):
            candidate = destination_dir / (name if attempt == 0 else f"{stem}-{attempt}{suffix}")
            try:
                os.link(temporary, candidate)
                return candidate
            except FileExistsError:
                continue
        raise TensorguessError(f"{destination_dir}: no free name for {name}")
    finally:
        temporary.unlink(missing_ok=True)


class Manifest:
    """DEST/manifest.csv: source, destination, label, score, then one column per label."""

    def __init__(self, destination: Path, labels: Sequence[str]):
        self.header = ["source", "destination", "label", "score", *labels]
        self.path = self._free_path(destination)
        new = not self.path.exists()
        self._stream = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._stream)
        if new:
            self._writer.writerow(self.header)
            self._stream.flush()

    def _free_path(self, destination: Path) -> Path:
        # Append to a manifest of the same model; a different model starts its own file.
        for attempt in range(1_000_000):
            path = destination / (MANIFEST if attempt == 0 else f"manifest-{attempt}.csv")
            if not path.exists():
                return path
            with open(path, newline="", encoding="utf-8") as stream:
                if next(csv.reader(stream), None) == self.header:
                    return path
        raise TensorguessError(f"{destination}: no free manifest name")

    def add(self, source: Path, destination: Path, label: str, scores: Sequence[float]) -> None:
        """Append one complete line and flush it, so a killed run keeps what it did."""
        best = max(scores)
        row = [
            str(source.resolve()),
            str(destination.resolve()),
            label,
            f"{best:.5f}",
            *(f"{s:.5f}" for s in scores),
        ]
        self._writer.writerow(row)
        self._stream.flush()
        os.fsync(self._stream.fileno())

    def close(self) -> None:
        """Close the file."""
        self._stream.close()


def sort_folder(
    classifier: Classifier,
    source: Path,
    destination: Path,
    batch_size: int = 64,
    on_copy: Callable[[Prediction, Path], None] | None = None,
) -> SortReport:
    """Classify every image in `source` and copy it into `destination`."""
    source, destination = Path(source), Path(destination)
    files, skipped = list_sources(source, destination)
    try:
        destination.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TensorguessError(
            f"{destination}: cannot create the folder ({error.strerror})"
        ) from None
    report = SortReport(skipped=skipped)
    labels = classifier.labels
    manifest = Manifest(destination, labels)
    report.manifest = manifest.path
    try:
        with progress_bar(len(files), "Sorting", unit="img") as bar:
            for prediction in classifier.classify(files, batch_size):
                bar.update(1)
                if prediction.scores is None:
                    report.skipped.append((prediction.path, prediction.problem))
                    continue
                label, score = prediction.ranked(labels, 1)[0]
                name = sorted_name(label, score, prediction.path.suffix)
                copied = copy_without_overwriting(prediction.path, destination, name)
                manifest.add(prediction.path, copied, label, prediction.scores)
                report.copied.append((prediction.path, copied, label, score))
                if on_copy:
                    on_copy(prediction, copied)
    finally:
        manifest.close()
    return report
