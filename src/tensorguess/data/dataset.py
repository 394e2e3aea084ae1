"""Scanning TF_FILES/data/<label>/: the labelled images, a stable split, and what was skipped.

Every image is hashed (SHA-256 of its bytes) once, here: the digest decides the split, so
identical photos always land in the same split and a duplicate cannot sit in both train
and test, and the feature cache reuses it as its key.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from tensorguess.data.images import image_problem
from tensorguess.errors import TensorguessError
from tensorguess.files import file_digest

TRAIN, VALIDATION, TEST = "train", "validation", "test"
# The split's defaults (train's --validation_percentage and --testing_percentage).
VALIDATION_PERCENTAGE = 10.0
TESTING_PERCENTAGE = 10.0
# retrain.py's constant: the split of a file never changes as a label grows.
_MAX_IMAGES_PER_LABEL = 2**27 - 1
# retrain.py's rule: "photo_nohash_2.jpg" splits like "photo", so near-copies stay together.
_NOHASH = re.compile(r"_nohash_.*$")
FEW_IMAGES = 20


@dataclass(frozen=True)
class LabelledImage:
    """One photo of the data folder, its label (its folder's name), split and content digest."""

    path: Path
    label: str
    split: str
    digest: str


@dataclass
class Scan:
    """What `scan_data` found: images, labels in output order, skipped files with reasons."""

    images: list[LabelledImage]
    labels: list[str]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[LabelledImage]:
        """The images of one split (train, validation or test)."""
        return [image for image in self.images if image.split == name]


def split_for(
    path: Path, digest: str, validation_percentage: float, testing_percentage: float
) -> str:
    """The split of a file, decided by its content's SHA-256 `digest` (hex).

    retrain.py hashed the file name; hashing the content keeps its stability (a photo
    never changes set as the folder grows) and also keeps copies together. A name with
    `_nohash_` still splits by the part before it, retrain.py's way to group near-copies.
    """
    if _NOHASH.search(path.name):
        digest = hashlib.sha1(_NOHASH.sub("", path.name).encode("utf-8")).hexdigest()
    number = int(digest, 16)
    percentage = (number % (_MAX_IMAGES_PER_LABEL + 1)) * (100.0 / _MAX_IMAGES_PER_LABEL)
    if percentage < validation_percentage:
        return VALIDATION
    if percentage < validation_percentage + testing_percentage:
        return TEST
    return TRAIN


def scan_data(
    data_dir: Path,
    validation_percentage: float = VALIDATION_PERCENTAGE,
    testing_percentage: float = TESTING_PERCENTAGE,
    least_labels: int = 2,
) -> Scan:
    """Find the labelled images under `data_dir`, one sub-folder per label.

    A classifier needs `least_labels` labels (2); checking a model on one label is fine.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise TensorguessError(
            f"{data_dir}: folder not found; put your photos in {data_dir}/<label>/ "
            "(one folder per label)"
        )
    images: list[LabelledImage] = []
    skipped: list[tuple[Path, str]] = []
    warnings: list[str] = []
    labels: list[str] = []
    empty: list[str] = []
    for entry in sorted(data_dir.iterdir()):
        if entry.name.startswith("."):
            skipped.append((entry, "hidden folder" if entry.is_dir() else "hidden file"))
            continue
        if not entry.is_dir():
            skipped.append((entry, "not in a label folder (put it in data/<label>/)"))
            continue
        if (problem := _label_problem(entry.name)) is not None:
            skipped.append((entry, f"{problem}; rename the folder"))
            continue
        found = _scan_label(entry, validation_percentage, testing_percentage, skipped)
        if not found:
            empty.append(entry.name)
            warnings.append(f"label folder {entry} has no images; it is left out")
            continue
        if len(found) < FEW_IMAGES:
            warnings.append(
                f"label {entry.name!r} has only {len(found)} images; "
                f"{FEW_IMAGES} or more give a more reliable classifier"
            )
        labels.append(entry.name)
        images.extend(found)
    if len(labels) < least_labels:
        raise TensorguessError(_too_few_labels(data_dir, labels, empty, skipped, least_labels))
    warnings.extend(_conflicting_copies(images))
    return Scan(images=images, labels=labels, skipped=skipped, warnings=warnings)


def _too_few_labels(
    data_dir: Path,
    labels: list[str],
    empty: list[str],
    skipped: list[tuple[Path, str]],
    least_labels: int,
) -> str:
    """Why the folder cannot serve, with what is there and what to do."""
    example = f"for example {data_dir}/cats/ and {data_dir}/dogs/"
    without = f"; these label folders have no images: {', '.join(empty)}" if empty else ""
    if labels:
        return (
            f"{data_dir}: only one label ({labels[0]}){without}; a classifier needs at least "
            f"two label folders with photos, {example}"
        )
    loose = sum(1 for path, _ in skipped if path.parent == data_dir and image_problem(path) is None)
    if loose:
        return (
            f"{data_dir}: {loose} {'image' if loose == 1 else 'images'} directly in the folder "
            f"but no label folders; move them into {data_dir}/<label>/ (one folder per label, "
            f"{example})"
        )
    need = "one folder per label" + (", at least two labels" if least_labels > 1 else "")
    return f"{data_dir}: no images found{without}; put your photos in {data_dir}/<label>/ ({need})"


def _label_problem(name: str) -> str | None:
    """Why a folder name cannot be a label: retrained_labels.txt is UTF-8, one label a line."""
    if "\n" in name or "\r" in name:
        return "a label cannot hold a line break"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "a label must be valid UTF-8 text"
    return None


def _scan_label(
    folder: Path,
    validation_percentage: float,
    testing_percentage: float,
    skipped: list[tuple[Path, str]],
) -> list[LabelledImage]:
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            skipped.append((path, "hidden file"))
        elif path.is_dir():
            skipped.append((path, "sub-folder (labels are one level deep)"))
        elif (problem := image_problem(path)) is not None:
            skipped.append((path, problem))
        else:
            try:
                digest = file_digest(path)
            except OSError as error:
                skipped.append((path, f"cannot read ({error.strerror or error})"))
                continue
            split = split_for(path, digest, validation_percentage, testing_percentage)
            found.append(LabelledImage(path=path, label=folder.name, split=split, digest=digest))
    return found


def _conflicting_copies(images: list[LabelledImage]) -> list[str]:
    """One warning per photo that sits, byte for byte, under more than one label."""
    by_digest: dict[str, list[LabelledImage]] = {}
    for image in images:
        by_digest.setdefault(image.digest, []).append(image)
    return [
        f"identical images under different labels "
        f"({', '.join(sorted({copy.label for copy in copies}))}): "
        f"{', '.join(str(copy.path) for copy in copies)}; keep the one in the right label folder"
        for copies in by_digest.values()
        if len({copy.label for copy in copies}) > 1
    ]
