"""Scanning TF_FILES/data/<label>/: the labelled images, a stable split, and what was skipped.

Every image is hashed (SHA-256 of its bytes) once, here: the digest decides the split, so
identical photos always land in the same split and a duplicate cannot sit in both train
and test, and the feature cache reuses it as its key.

Multi-label (a photo has any number of labels, none included) comes two ways, and the scan
says which mode it is in and why (`Scan.mode`):

- `TF_FILES/labels.csv`, header `image,labels`: `image` a path under data/, `labels`
  separated by spaces (the Kaggle Planet / fastai layout); an empty cell is a photo with no
  label. Only the photos it lists are used, each under the labels it gives.
- One photo (the same content) in several `data/<label>/` folders has each of their labels,
  and `data/untagged/` holds photos with none: the layout guessDir.sh sorts into, so a sorted
  DEST can be trained on again. Without multi-label this is a conflict and is warned about.

In multi-label mode a photo is one image however many copies of it there are: one split,
one feature vector, its labels the union of its copies'.
"""

from __future__ import annotations

import csv
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
LABELS_CSV = "labels.csv"
LABELS_CSV_HEADER = ["image", "labels"]
# Multi-label: the folder of photos with no label, in data/ and in guessDir.sh's DEST.
UNTAGGED = "untagged"
# Photos named in one line of an error before "and N more".
MOST_NAMED = 5


@dataclass(frozen=True)
class LabelledImage:
    """One photo of the data folder, its label (its folder's name), split and content digest.

    `labels` are all its labels: `(label,)` for a single-label photo; for a multi-label one,
    any number in output order, `label` being the first of them ("" for a photo with none).
    """

    path: Path
    label: str
    split: str
    digest: str
    labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.labels is None:
            object.__setattr__(self, "labels", (self.label,))


@dataclass
class Scan:
    """What `scan_data` found: images, labels in output order, skipped files with reasons."""

    images: list[LabelledImage]
    labels: list[str]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    multi_label: bool = False
    mode: str = ""  # which mode the scan is in and why, for train's log

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


SINGLE_LABEL_MODE = (
    "Single-label: one label per photo, its folder's (for photos with several labels: "
    "TF_FILES/labels.csv or --multi_label; docs/multilabel.md)"
)
FOLDERS_MODE = (
    "Multi-label (--multi_label): a photo has the label of every data/<label>/ folder it is "
    f"in; those in data/{UNTAGGED}/ have none"
)
CSV_MODE = "Multi-label: {csv} gives each photo its labels (any number, none included)"


def scan_data(
    data_dir: Path,
    validation_percentage: float = VALIDATION_PERCENTAGE,
    testing_percentage: float = TESTING_PERCENTAGE,
    least_labels: int = 2,
    multi_label: bool | None = False,
    labels_csv: Path | None = None,
) -> Scan:
    """Find the labelled images under `data_dir`, one sub-folder per label.

    A classifier needs `least_labels` labels (2); checking a model on one label is fine.
    `multi_label`: False, single-label (labels.csv is not read); True, multi-label; None,
    multi-label when `labels_csv` (default: labels.csv beside `data_dir`) exists.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise TensorguessError(
            f"{data_dir}: folder not found; put your photos in {data_dir}/<label>/ "
            "(one folder per label)"
        )
    percentages = (validation_percentage, testing_percentage)
    labels_csv = Path(labels_csv) if labels_csv else data_dir.parent / LABELS_CSV
    if multi_label is not False and labels_csv.is_file():
        return _scan_labels_csv(data_dir, labels_csv, percentages)
    scan = _scan_folders(data_dir, percentages, least_labels, bool(multi_label))
    if multi_label is None:
        scan.mode = SINGLE_LABEL_MODE
    return scan


def _scan_folders(
    data_dir: Path, percentages: tuple[float, float], least_labels: int, multi_label: bool
) -> Scan:
    """The label folders of `data_dir`: single-label, or multi-label (copies merged)."""
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
        problem = _label_problem(entry.name)
        if multi_label and problem is None and entry.name != UNTAGGED:
            problem = _multi_label_problem(entry.name)
        if problem is not None:
            skipped.append((entry, f"{problem}; rename the folder"))
            continue
        found = _scan_label(entry, *percentages, skipped)
        if multi_label and entry.name == UNTAGGED:
            images.extend(found)
            continue
        if not found:
            empty.append(entry.name)
            warnings.append(f"label folder {entry} has no images; it is left out")
            continue
        if not multi_label and len(found) < FEW_IMAGES:
            warnings.append(_few_images_warning(entry.name, len(found)))
        labels.append(entry.name)
        images.extend(found)
    if multi_label:
        least_labels = 1
    if len(labels) < least_labels:
        raise TensorguessError(_too_few_labels(data_dir, labels, empty, skipped, least_labels))
    if not multi_label:
        warnings.extend(_conflicting_copies(images))
        return Scan(images=images, labels=labels, skipped=skipped, warnings=warnings)
    warnings.extend(_untagged_with_labels(images))
    merged = _merged(
        [
            (image.path, image.digest, () if image.label == UNTAGGED else (image.label,))
            for image in images
        ],
        labels,
        percentages,
    )
    warnings[:0] = _few_images(merged, labels)
    return Scan(merged, labels, skipped, warnings, multi_label=True, mode=FOLDERS_MODE)


def _few_images_warning(label: str, count: int) -> str:
    return (
        f"label {label!r} has only {count} images; {FEW_IMAGES} or more give a more reliable "
        "classifier"
    )


def _few_images(images: list[LabelledImage], labels: list[str]) -> list[str]:
    """A warning for each label of multi-label `images` with fewer than FEW_IMAGES photos."""
    counts = {label: 0 for label in labels}
    for image in images:
        for label in image.labels or ():
            counts[label] += 1
    return [
        _few_images_warning(label, count) for label, count in counts.items() if count < FEW_IMAGES
    ]


def _merged(
    found: list[tuple[Path, str, tuple[str, ...]]],
    labels: list[str],
    percentages: tuple[float, float],
) -> list[LabelledImage]:
    """Multi-label images: (path, digest, labels) found, one image per content (the first
    path found), with the labels of all its copies in output order."""
    by_digest: dict[str, tuple[Path, set[str]]] = {}
    for path, digest, given in found:
        by_digest.setdefault(digest, (path, set()))[1].update(given)
    images = []
    for digest, (path, given) in by_digest.items():
        ordered = tuple(label for label in labels if label in given)
        split = split_for(path, digest, *percentages)
        label = ordered[0] if ordered else ""
        images.append(LabelledImage(path, label, split, digest, ordered))
    return images


def _untagged_with_labels(images: list[LabelledImage]) -> list[str]:
    """One warning per photo both in untagged/ and in a label folder (it keeps its labels)."""
    return [
        f"{', '.join(str(copy.path) for copy in copies)}: one photo in {UNTAGGED}/ and in "
        f"{', '.join(sorted(folders - {UNTAGGED}))}; it counts with those labels (remove the "
        f"copy in {UNTAGGED}/ if they are right)"
        for copies in _by_digest(images).values()
        if UNTAGGED in (folders := {copy.label for copy in copies}) and len(folders) > 1
    ]


def _scan_labels_csv(data_dir: Path, labels_csv: Path, percentages: tuple[float, float]) -> Scan:
    """The photos labels.csv lists, with its labels; the files of `data_dir` it does not list
    are skipped with the reason."""
    rows = _read_labels_csv(labels_csv, data_dir)
    skipped: list[tuple[Path, str]] = []
    warnings: list[str] = []
    given: dict[Path, set[str]] = {}
    for path, labels in rows:
        if path in given and given[path] != set(labels):
            warnings.append(
                f"{labels_csv}: {path.relative_to(data_dir)} is listed more than once; it gets "
                "the labels of all its lines"
            )
        given.setdefault(path, set()).update(labels)
    all_labels = sorted(set().union(*given.values()))
    found: list[tuple[Path, str, tuple[str, ...]]] = []
    for path, labels in given.items():
        if path.name.startswith("."):
            skipped.append((path, "hidden file"))
        elif (problem := image_problem(path)) is not None:
            skipped.append((path, problem))
        else:
            try:
                found.append((path, file_digest(path), tuple(labels)))
            except OSError as error:
                skipped.append((path, f"cannot read ({error.strerror or error})"))
    skipped += [
        (
            path,
            f"not listed in {LABELS_CSV} (add a line for it; an empty labels cell makes "
            "it a photo with no label)",
        )
        for path in sorted(data_dir.rglob("*"))
        if path.is_file()
        and path not in given
        and path != labels_csv
        and not any(part.startswith(".") for part in path.relative_to(data_dir).parts)
    ]
    images = _merged(found, all_labels, percentages)
    if not images:
        raise TensorguessError(f"{labels_csv}: none of the photos it lists can be read")
    warnings = _few_images(images, all_labels) + warnings
    mode = CSV_MODE.format(csv=labels_csv)
    return Scan(images, all_labels, skipped, warnings, multi_label=True, mode=mode)


def _read_labels_csv(labels_csv: Path, data_dir: Path) -> list[tuple[Path, tuple[str, ...]]]:
    """(photo, labels) of each line of labels.csv, checked: one line for what is wrong."""
    try:
        with open(labels_csv, newline="", encoding="utf-8-sig") as stream:
            lines = list(csv.reader(stream))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise TensorguessError(f"{labels_csv}: cannot read it ({error})") from None
    fix = f"its first line must be the header {','.join(LABELS_CSV_HEADER)}"
    if not lines or [cell.strip().lower() for cell in lines[0]] != LABELS_CSV_HEADER:
        found = ",".join(lines[0]) if lines else "an empty file"
        raise TensorguessError(f"{labels_csv}: {fix} (found {found[:80]!r})")
    rows: list[tuple[Path, tuple[str, ...]]] = []
    missing: list[str] = []
    root = data_dir.resolve()
    for number, line in enumerate(lines[1:], start=2):
        if not any(cell.strip() for cell in line):
            continue
        if len(line) != 2:
            raise TensorguessError(
                f"{labels_csv}: line {number} has {len(line)} cells, not 2 (image,labels); "
                "quote a name that holds a comma"
            )
        image, cell = line[0].strip(), line[1]
        path = data_dir / image
        if not image or Path(image).is_absolute() or not path.resolve().is_relative_to(root):
            raise TensorguessError(
                f"{labels_csv}: line {number}: {image!r} is not a path under {data_dir}; "
                "give each photo's path relative to data/"
            )
        labels = tuple(dict.fromkeys(cell.split()))
        for label in labels:
            if (problem := _label_problem(label) or _multi_label_problem(label)) is not None:
                raise TensorguessError(
                    f"{labels_csv}: line {number}: label {label!r}: {problem}; rename it"
                )
        if not path.is_file():
            missing.append(image)
        rows.append((path, labels))
    if missing:
        named = ", ".join(missing[:MOST_NAMED])
        more = f" and {len(missing) - MOST_NAMED} more" if len(missing) > MOST_NAMED else ""
        raise TensorguessError(
            f"{labels_csv}: {len(missing)} of the photos it names are not in {data_dir}: "
            f"{named}{more}; fix their paths (relative to data/) or remove their lines"
        )
    if not rows:
        raise TensorguessError(f"{labels_csv}: no photos listed; add a line image,labels per photo")
    if not any(labels for _, labels in rows):
        raise TensorguessError(
            f"{labels_csv}: the labels cell is empty on every line, so no photo has a label; "
            "give each photo its labels, separated by spaces"
        )
    return rows


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


def _multi_label_problem(name: str) -> str | None:
    """Why a name cannot be a label of a multi-label model, whose labels become guessDir's
    folders and are separated by spaces in labels.csv and manifest.csv."""
    if any(character.isspace() for character in name):
        return "a multi-label label cannot hold a space (labels are separated by spaces)"
    if "/" in name or "\\" in name:
        return "a label cannot hold a path separator (guessDir.sh makes a folder of each label)"
    if name in (".", ".."):
        return "a label cannot be . or .. (guessDir.sh makes a folder of each label)"
    if name == UNTAGGED:
        return f"{UNTAGGED} is the name for photos with no label (an empty labels cell)"
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
    by_digest = _by_digest(images)
    return [
        f"identical images under different labels "
        f"({', '.join(sorted({copy.label for copy in copies}))}): "
        f"{', '.join(str(copy.path) for copy in copies)}; keep the one in the right label "
        "folder, or train with --multi_label if a photo may have several labels"
        for copies in by_digest.values()
        if len({copy.label for copy in copies}) > 1
    ]


def _by_digest(images: list[LabelledImage]) -> dict[str, list[LabelledImage]]:
    """The images grouped by content."""
    groups: dict[str, list[LabelledImage]] = {}
    for image in images:
        groups.setdefault(image.digest, []).append(image)
    return groups
