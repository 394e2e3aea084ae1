"""What the page lists, most useful first: doctor's findings about the training photos
(likely mislabelled, near-duplicates, outliers), then each sorted DEST's doubtful copies.

A photo is named by an id that says where it is: `data/<label>/<name>` for a training photo
(its path under TF_FILES), `sorted/<n>/<name>` for a copy in the n-th DEST given (its path
under DEST). Requests name photos by these ids only; a path is never taken from a request.
A finding is listed unless someone kept it (checked it) while its photos had the content
they have now.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tensorguess.review.sorted_copies import SortedCopy, doubtful_copies

LABEL_ISSUE, NEAR_DUPLICATE, OUTLIER, SORTED = "label_issue", "near_duplicate", "outlier", "sorted"
KINDS = (LABEL_ISSUE, NEAR_DUPLICATE, OUTLIER, SORTED)
DATA, SORTED_FOLDER = "data", "sorted"


@dataclass(frozen=True)
class Photo:
    """A photo the page shows: its id, where it is, its label and content when listed; for a
    copy in a sorted DEST, that DEST and its manifest row."""

    id: str
    path: Path
    label: str
    sha256: str
    copy: SortedCopy | None = None
    dest: Path | None = None

    def to_json(self) -> dict:
        """The photo as the API shows it."""
        return {
            "id": self.id,
            "name": self.path.name,
            "label": self.label,
            "sha256": self.sha256,
            "where": SORTED_FOLDER if self.copy else DATA,
        }


@dataclass(frozen=True)
class Item:
    """One finding: its kind, its photos (two for near-duplicates), and what was found."""

    id: str
    kind: str
    photos: tuple[Photo, ...]
    facts: dict

    @property
    def key(self) -> list[str]:
        """What a keep records: the kind, and its photos' content."""
        return [self.kind, *sorted(photo.sha256 for photo in self.photos)]

    def to_json(self) -> dict:
        """The finding as the API shows it."""
        return {
            "id": self.id,
            "kind": self.kind,
            "photos": [photo.to_json() for photo in self.photos],
            **self.facts,
        }


@dataclass
class Listing:
    """The findings at one time, and every photo they name, by id."""

    items: list[Item] = field(default_factory=list)
    photos: dict[str, Photo] = field(default_factory=dict)
    checked_at: float = 0.0
    problem: str = ""  # why there is no list, when the check failed

    def add(self, kind: str, photos: Sequence[Photo], facts: dict) -> None:
        """List a finding about `photos`."""
        item_id = f"{kind}:" + "|".join(photo.id for photo in photos)
        self.items.append(Item(item_id, kind, tuple(photos), facts))

    def leave_out(self, kept: set[tuple[str, ...]]) -> None:
        """Drop the findings kept, and index the photos of the others."""
        self.items = [item for item in self.items if tuple(item.key) not in kept]
        self.photos = {photo.id: photo for item in self.items for photo in item.photos}


def build_listing(
    tf_files: Path,
    dests: Sequence[Path],
    kept: set[tuple[str, ...]],
    engine: str | None,
    say: Callable[[str], None],
) -> Listing:
    """Check TF_FILES/data as `tensorguess doctor` does, read each DEST, and list what was
    found, leaving out what was kept."""
    from tensorguess.quality.doctor import check_folder

    checkup = check_folder(tf_files, engine, say=say)
    digests = checkup.digests
    listing = Listing(checked_at=time.time())

    def photo(path: str, label: str) -> Photo:
        where = Path(path)
        return Photo(where.relative_to(tf_files).as_posix(), where, label, digests[path])

    for issue in checkup.label_issues:
        listing.add(
            LABEL_ISSUE,
            [photo(issue.path, issue.label)],
            {
                "suggested": issue.suggested,
                "confidence": issue.confidence,
                "wrong": issue.wrong,
            },
        )
    for pair in checkup.near_duplicates:
        listing.add(
            NEAR_DUPLICATE,
            [photo(path, label) for path, label in zip(pair.paths, pair.labels, strict=True)],
            {
                "similarity": pair.similarity,
                "identical": pair.identical,
                "across_labels": pair.across_labels,
                "straddles_train_and_test": pair.straddles,
            },
        )
    for outlier in checkup.outliers:
        listing.add(OUTLIER, [photo(outlier.path, outlier.label)], {"novelty": outlier.novelty})
    for number, dest in enumerate(dests):
        for copy in doubtful_copies(dest):
            photo_id = f"{SORTED_FOLDER}/{number}/{copy.path.relative_to(dest).as_posix()}"
            listing.add(
                SORTED,
                [Photo(photo_id, copy.path, copy.label, copy.sha256, copy, dest)],
                {"score": copy.score, "unknown": copy.unknown, "dest": str(dest)},
            )
    listing.leave_out(kept)
    return listing
