"""One review of a TF_FILES: its journal and ledger, the list on show, the pictures, the
training; what every route asks of it, with its refusals as `Refused` (status, one line).

Actions run one at a time (a lock), on the server's worker threads, never on its event
loop: each hashes the photo and fsyncs the journal. The list is made on a thread of its own
(doctor's check may import TensorFlow and compute features: seconds), at start, on request
and after a training; meanwhile the page shows the last one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path

from tensorguess.data.dataset import LABELS_CSV
from tensorguess.errors import TensorguessError, first_line
from tensorguess.files import folder_lock
from tensorguess.review.actions import KEEP, RELABEL, REMOVE, Ledger, Refused, label_problem
from tensorguess.review.journal import Journal
from tensorguess.review.listing import Item, Listing, Photo, build_listing
from tensorguess.review.moves import content
from tensorguess.review.pictures import Pictures
from tensorguess.review.retrain import Retraining

PAST = {RELABEL: "relabelled", REMOVE: "removed", KEEP: "kept"}


def _conflict(message: str) -> Refused:
    return Refused(409, message)


@contextmanager
def _holding(
    tf_files: Path, dests: Sequence[Path], refusal: Callable[[str], Exception]
) -> Iterator[None]:
    """Hold TF_FILES' train lock and each DEST's lock (a train.sh or guessDir.sh holding one
    is `refusal`, with folder_lock's line naming the folder)."""
    with ExitStack() as held:
        for folder, activity in [(tf_files, "train"), *((dest, "sort") for dest in set(dests))]:
            try:
                held.enter_context(folder_lock(folder, activity))
            except TensorguessError as error:
                raise refusal(str(error)) from None
        yield


class Review:
    """The state of `tensorguess review TF_FILES` while it runs."""

    def __init__(
        self,
        tf_files: Path,
        dests: Sequence[Path],
        engine: str | None,
        say: Callable[[str], None],
    ) -> None:
        self.tf_files = Path(tf_files).resolve()
        self.dests = [Path(dest).resolve() for dest in dests]
        self.engine, self.say = engine, say
        if not (self.tf_files / "data").is_dir():
            raise TensorguessError(
                f"{self.tf_files / 'data'}: folder not found; review needs TF_FILES with your "
                "photos in data/<label>/"
            )
        for dest in self.dests:
            if not dest.is_dir():
                raise TensorguessError(
                    f"--sorted {dest}: folder not found; give a DEST that guessDir.sh sorted into"
                )
        self.journal = Journal(self.tf_files)
        self.ledger = Ledger(self.tf_files, self.journal)
        pending = self.ledger.pending()
        if pending:
            # Finishing what a killed review left moves photos and writes manifests: not
            # under a training, nor a sort into the DEST concerned.
            dests = [
                dest
                for number in pending
                for dest in self.ledger.dests(self.ledger.actions[number])
            ]
            with _holding(self.tf_files, dests, TensorguessError):
                for line in self.ledger.replay():
                    say(f"tensorguess review: {line}")
        self.pictures = Pictures(self.tf_files, engine)
        self.training = Retraining(self.tf_files, self._trained)
        self.listing = Listing()
        self.checking = False
        self._acting = threading.Lock()
        self._listing_lock = threading.Lock()

    # The list ------------------------------------------------------------------------------

    def check(self) -> bool:
        """Make the list again in the background; False if it is being made already."""
        with self._listing_lock:
            if self.checking:
                return False
            self.checking = True
        threading.Thread(target=self._check, daemon=True, name="tensorguess-check").start()
        return True

    def _check(self) -> None:
        started = time.monotonic()
        try:
            listing = build_listing(
                self.tf_files, self.dests, self.ledger.kept(), self.engine, lambda line: None
            )
            self.say(
                f"tensorguess review: {len(listing.items)} findings listed in "
                f"{time.monotonic() - started:.1f} s"
            )
        except Exception as error:  # noqa: BLE001  (said on the page, and the server goes on)
            listing = Listing(checked_at=time.time(), problem=first_line(error))
            self.say(f"tensorguess review: the check failed: {listing.problem}")
        with self._listing_lock:
            self.listing, self.checking = listing, False

    def _trained(self) -> None:
        self.pictures.model_changed()
        self.check()

    def labels(self) -> list[str]:
        """The label folders of data/, as they are now."""
        return sorted(
            entry.name
            for entry in (self.tf_files / "data").iterdir()
            if entry.is_dir() and not entry.name.startswith(".")
        )

    def items(self) -> dict:
        """The list on show, with each finding's action in effect (if one was taken)."""
        listing = self.listing
        items = []
        for item in listing.items:
            answer = item.to_json()
            acted = [self.ledger.acted_on(photo) for photo in item.photos]
            if tuple(item.key) in self.ledger.kept():
                acted.append(self._kept_by(item))
            answer["actions"] = [self._summary(record) for record in acted if record]
            items.append(answer)
        return {
            "labels": self.labels(),
            "checking": self.checking,
            "checked_at": listing.checked_at or None,
            "problem": listing.problem or None,
            "items": items,
        }

    def _kept_by(self, item: Item) -> dict | None:
        for record in self.ledger.standing():
            if record["action"] == KEEP and record["key"] == item.key:
                return record
        return None

    @staticmethod
    def _summary(record: dict) -> dict:
        return {key: record.get(key) for key in ("id", "action", "photo", "to_label", "undoes")}

    # Acting --------------------------------------------------------------------------------

    def photo(self, photo_id: str, sha256: str) -> Photo:
        """The listed photo `photo_id`, checked to be as the page saw it and as it is on disk."""
        photo = self.listing.photos.get(photo_id)
        if photo is None:
            raise Refused(404, f"no photo {photo_id!r} in the list; reload the page")
        if sha256 != photo.sha256:
            raise Refused(409, f"{photo_id}: the page's list is older than the server's; reload")
        acted = self.ledger.acted_on(photo)
        if acted is not None:
            raise Refused(
                409,
                f"{photo_id}: already {PAST[acted['action']]} (action {acted['id']}, maybe "
                "from another page); reload the page, or undo that first",
            )
        return photo

    def where_now(self, photo_id: str) -> Photo:
        """The listed photo `photo_id` (404 if none), at the path it has now: an action in
        effect may have moved it since it was listed."""
        photo = self.listing.photos.get(photo_id)
        if photo is None:
            raise Refused(404, f"no photo {photo_id!r} in the list; reload the page")
        acted = self.ledger.acted_on(photo)
        moved_to = acted and self.ledger.done[acted["id"]].get("to")
        return replace(photo, path=Path(moved_to)) if moved_to else photo

    def _on_disk(self, photo: Photo) -> None:
        now = content(photo.path)
        if now is None:
            raise Refused(
                409, f"{photo.id}: no longer there (moved or deleted since it was listed)"
            )
        if now != photo.sha256:
            raise Refused(409, f"{photo.id}: changed on disk since it was listed; reload the list")

    def act(self, action: str, photo_id: str, sha256: str, label: str | None, item_id: str):
        """Apply one action (relabel, remove, keep): its journal record once done."""
        with self._acting:
            if action == KEEP:
                return self._keep(item_id, sha256)
            photo = self.photo(photo_id, sha256)
            if (self.tf_files / LABELS_CSV).exists():
                # There a photo's labels are its lines in labels.csv, not its folder: a move
                # would leave a line naming a photo that is gone, and train.sh refusing it.
                raise Refused(
                    400,
                    f"{self.tf_files / LABELS_CSV} gives the photos their labels: change "
                    f"{photo_id}'s line there (the review moves photos between label folders)",
                )
            if action == RELABEL:
                label = label or ""
                problem = label_problem(label)
                if problem:
                    raise Refused(400, f"label {label!r}: {problem}")
                if label == photo.label and photo.copy is None:
                    raise Refused(400, f"{photo_id} is labelled {label} already")
            elif photo.copy is not None:
                raise Refused(
                    400, f"{photo_id} is a sorted copy, not a training photo: keep or relabel it"
                )
            self._on_disk(photo)
            with self._files_still([photo.dest] if photo.dest else []):
                if action == RELABEL:
                    return self._answer(self.ledger.relabel(photo, str(label)))
                return self._answer(self.ledger.remove(photo))

    def _keep(self, item_id: str, sha256: str) -> dict:
        item = next((item for item in self.listing.items if item.id == item_id), None)
        if item is None:
            raise Refused(404, f"no finding {item_id!r} in the list; reload the page")
        if sha256 != item.photos[0].sha256:
            raise Refused(409, f"{item_id}: the page's list is older than the server's; reload")
        if tuple(item.key) in self.ledger.kept():
            raise Refused(409, f"{item_id}: kept already (maybe from another page)")
        for photo in item.photos:
            self._on_disk(photo)
        return self._answer(self.ledger.keep(item))

    def undo(self, action: int | None) -> dict:
        """Undo `action` (default: the latest in effect)."""
        with self._acting:
            dests = self.ledger.dests(self.ledger.to_undo(action))
            with self._files_still(dests):
                return self._answer(self.ledger.undo(action))

    @contextmanager
    def _files_still(self, dests: Sequence[Path]) -> Iterator[None]:
        """Hold TF_FILES' train lock, and the lock of each DEST written to, for the time of
        an action: no training reads data/ while photos move, no sort appends to a manifest
        while it is rewritten."""
        if self.training.running:
            raise Refused(409, "a training started here is running; act once it is done")
        with _holding(self.tf_files, dests, _conflict):
            yield

    def _answer(self, done: dict) -> dict:
        if "failed" in done:
            raise Refused(409, f"nothing was changed: {done['failed']}")
        record = self.ledger.actions[done["done"]]
        return {**self._summary(record), "label": record.get("label"), "to": done.get("to")}

    def close(self) -> None:
        """Let the journal and the threads go."""
        self.pictures.close()
        self.journal.close()
