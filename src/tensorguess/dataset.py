"""Scanning TF_FILES/data/<label>/: the labelled images, a stable split, and what was skipped."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from tensorguess.errors import TensorguessError
from tensorguess.images import image_problem

TRAIN, VALIDATION, TEST = "train", "validation", "test"
# retrain.py's constant: the split of a file never changes as a label grows.
_MAX_IMAGES_PER_LABEL = 2**27 - 1
# retrain.py's rule: "photo_nohash_2.jpg" splits like "photo", so near-copies stay together.
_NOHASH = re.compile(r"_nohash_.*$")
FEW_IMAGES = 20


@dataclass(frozen=True)
class LabelledImage:
    """One photo of the data folder, its label (its folder's name) and its split."""

    path: Path
    label: str
    split: str


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


def split_for(path: Path, validation_percentage: float, testing_percentage: float) -> str:
    """The split of a file, decided by a hash of its name alone (retrain.py's rule)."""
    stem = _NOHASH.sub("", path.name)
    digest = int(hashlib.sha1(stem.encode("utf-8")).hexdigest(), 16)
    percentage = (digest % (_MAX_IMAGES_PER_LABEL + 1)) * (100.0 / _MAX_IMAGES_PER_LABEL)
    if percentage < validation_percentage:
        return VALIDATION
    if percentage < validation_percentage + testing_percentage:
        return TEST
    return TRAIN


def check_percentages(validation_percentage: float, testing_percentage: float) -> None:
    """Refuse split percentages that leave no training images."""
    if not (0 <= validation_percentage < 100 and 0 <= testing_percentage < 100):
        raise TensorguessError("--validation_percentage and --testing_percentage must be 0-99")
    if validation_percentage + testing_percentage >= 100:
        raise TensorguessError(
            "--validation_percentage plus --testing_percentage must stay under 100"
        )


def scan_data(
    data_dir: Path, validation_percentage: float = 10, testing_percentage: float = 10
) -> Scan:
    """Find the labelled images under `data_dir`, one sub-folder per label."""
    check_percentages(validation_percentage, testing_percentage)
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
    for entry in sorted(data_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            skipped.append((entry, "not in a label folder (put it in data/<label>/)"))
            continue
        found = _scan_label(entry, validation_percentage, testing_percentage, skipped)
        if not found:
            warnings.append(f"label folder {entry} has no images; it is left out")
            continue
        if len(found) < FEW_IMAGES:
            warnings.append(
                f"label {entry.name!r} has only {len(found)} images; "
                f"{FEW_IMAGES} or more give a more reliable classifier"
            )
        labels.append(entry.name)
        images.extend(found)
    if not labels:
        raise TensorguessError(
            f"{data_dir}: no images found; put your photos in {data_dir}/<label>/ "
            "(one folder per label, at least two labels)"
        )
    if len(labels) < 2:
        raise TensorguessError(
            f"{data_dir}: only one label ({labels[0]}); a classifier needs at least two "
            f"label folders, for example {data_dir}/cats/ and {data_dir}/dogs/"
        )
    return Scan(images=images, labels=labels, skipped=skipped, warnings=warnings)


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
            split = split_for(path, validation_percentage, testing_percentage)
            found.append(LabelledImage(path=path, label=folder.name, split=split))
    return found
