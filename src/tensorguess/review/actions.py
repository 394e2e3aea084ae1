"""The actions, journaled before they are applied: relabel, remove, keep, and undo.

An action's journal line holds its `operation`, everything needed to apply it from
scratch or to finish it after a kill:

- `move`: the photo at `from` goes into `folder` under the free name `name` (or the next
  free one); a training photo relabelled (`data/<label>/`) or removed (`removed/<label>/`).
- `copy`: the sorted copy at `from` is copied into `folder` as `name`; then its line in
  DEST's manifest gets the person's label (`reviewed`: which manifest, line and label).
- `drop`: the copy at `copy` (made from `original`, which still holds the same bytes) is
  removed; then the manifest line's person's label is emptied. Only an undo drops.
- none: keep (and the undo of a keep) changes no file.

`{"done": ID, "to": PATH}` follows once the files are as the line says, or
`{"done": ID, "failed": REASON}` when the photo changed or vanished before it could be
applied (nothing was changed then).
"""

from __future__ import annotations

import time
import unicodedata
from pathlib import Path

from tensorguess.classify.sort import safe_name_part
from tensorguess.review.journal import Journal
from tensorguess.review.listing import Item, Photo
from tensorguess.review.moves import (
    COPIED,
    JOURNALED,
    Incomplete,
    complete_copy,
    complete_drop,
    complete_move,
    content,
    crash_point,
    free_name,
)
from tensorguess.review.sorted_copies import record_reviewed

RELABEL, REMOVE, KEEP, UNDO = "relabel", "remove", "keep", "undo"
MOVE, COPY, DROP = "move", "copy", "drop"
REMOVED = "removed"  # TF_FILES/removed/<label>/: photos taken out of training, never deleted
# A label is a folder name and a line of retrained_labels.txt, within NAME_MAX with room
# for the counts guessDir adds to sorted names.
LONGEST_LABEL = 180


class Refused(Exception):
    """An action the review will not take: the HTTP status and one line saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def label_problem(label: str) -> str | None:
    """Why `label` cannot name a label folder, or None when it can."""
    if not label.strip():
        return "a label cannot be empty"
    if "/" in label or "\\" in label:
        return "a label cannot hold a path separator (/ or \\): it is a folder's name"
    if label.startswith("."):
        return "a label cannot start with a dot: its folder would be hidden (and skipped)"
    if label != label.strip():
        return "a label cannot start or end with a space"
    if any(unicodedata.category(character) in ("Cc", "Cs", "Zl", "Zp") for character in label):
        return "a label cannot hold control characters or line breaks"
    if len(label.encode("utf-8")) > LONGEST_LABEL:
        return f"a label can be at most {LONGEST_LABEL} bytes long"
    return None


class Ledger:
    """The actions of the journal: which are done, undone, kept; and applying new ones."""

    def __init__(self, tf_files: Path, journal: Journal) -> None:
        self.tf_files = Path(tf_files)
        self.journal = journal
        self.actions: dict[int, dict] = {}
        self.done: dict[int, dict] = {}
        for record in journal.records:
            if "done" in record:
                self.done[int(record["done"])] = record
            elif "id" in record:
                self.actions[int(record["id"])] = record

    # What the journal says ----------------------------------------------------------------

    def applied(self, action: int) -> bool:
        """Whether `action` took effect (done, not failed)."""
        return action in self.done and "failed" not in self.done[action]

    def undone_by(self, action: int) -> int | None:
        """The undo that took `action` back, if one did."""
        for number, record in self.actions.items():
            if record["action"] == UNDO and record["undoes"] == action and self.applied(number):
                return number
        return None

    def standing(self) -> list[dict]:
        """The actions in effect (applied, not undone; undos aside), oldest first."""
        return [
            record
            for number, record in sorted(self.actions.items())
            if record["action"] != UNDO and self.applied(number) and self.undone_by(number) is None
        ]

    def kept(self) -> set[tuple[str, ...]]:
        """The findings kept: their kind and their photos' content."""
        return {tuple(record["key"]) for record in self.standing() if record["action"] == KEEP}

    def acted_on(self, photo: Photo) -> dict | None:
        """The action in effect that moved or relabelled this photo, as listed, if any."""
        for record in self.standing():
            if record["action"] in (RELABEL, REMOVE) and (record["photo"], record["sha256"]) == (
                photo.id,
                photo.sha256,
            ):
                return record
        return None

    def history(self, most: int = 50) -> list[dict]:
        """The latest actions, newest first, each with what became of it."""
        summaries = []
        for number in sorted(self.actions, reverse=True)[:most]:
            record = self.actions[number]
            done = self.done.get(number, {})
            summaries.append(
                {
                    "id": number,
                    "at": record["at"],
                    "action": record["action"],
                    "photo": record.get("photo"),
                    "label": record.get("label"),
                    "to_label": record.get("to_label"),
                    "undoes": record.get("undoes"),
                    "to": done.get("to"),
                    "failed": done.get("failed"),
                    "undone_by": self.undone_by(number),
                }
            )
        return summaries

    # Doing ------------------------------------------------------------------------------------

    def pending(self) -> list[int]:
        """The actions journaled but not marked done: a kill came between."""
        return [number for number in sorted(self.actions) if number not in self.done]

    def replay(self) -> list[str]:
        """Finish every pending action; what became of each."""
        said = []
        for number in self.pending():
            record = self.actions[number]
            done = self._complete(record)
            outcome = done.get("failed") or f"finished ({done.get('to') or 'no file moved'})"
            said.append(f"action {number} ({record['action']}) was interrupted: {outcome}")
        return said

    def _next_id(self) -> int:
        return max([*self.actions, 0]) + 1

    def _record(self, action: str, **fields) -> dict:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return {"id": self._next_id(), "at": stamp, "action": action, **fields}

    def _apply(self, record: dict) -> dict:
        """Journal `record` (on disk), then do it, then journal that it is done."""
        self.journal.append(record)
        self.actions[record["id"]] = record
        crash_point(JOURNALED)
        return self._complete(record)

    def _complete(self, record: dict) -> dict:
        number = record["id"]
        try:
            to = self._operate(record.get("operation"), record["sha256"], number)
            done = {"done": number, "to": to}
        except (Incomplete, OSError) as error:
            done = {"done": number, "failed": str(error)}
        self.journal.append(done)
        self.done[number] = done
        return done

    def _operate(self, operation: dict | None, digest: str, number: int) -> str | None:
        """Apply (or finish) the files' side of an action; where the photo is now."""
        if operation is None:
            return None
        where = self._files(operation, digest, number)
        if operation.get("tidy"):
            # An undo empties the folder the action filled (a new label's, removed/'s): an
            # empty label folder would only be warned about by every training.
            _remove_if_empty(Path(operation.get("copy") or operation["from"]).parent)
        return where

    def _files(self, operation: dict, digest: str, number: int) -> str:
        kind = operation["kind"]
        if kind == MOVE:
            moved = complete_move(
                Path(operation["from"]), Path(operation["folder"]), operation["name"], digest
            )
            return str(moved)
        if kind == COPY:
            copied = complete_copy(
                Path(operation["from"]), Path(operation["folder"]), operation["name"], digest
            )
            crash_point(COPIED)
            self._record_reviewed(operation["reviewed"])
            return str(copied)
        complete_drop(Path(operation["copy"]), Path(operation["original"]), digest)
        self._record_reviewed(operation["reviewed"])
        return operation["original"]

    @staticmethod
    def _record_reviewed(reviewed: dict) -> None:
        record_reviewed(
            Path(reviewed["manifest"]),
            reviewed["destination"],
            reviewed["sha256"],
            reviewed["human"],
        )

    def dests(self, record: dict) -> list[Path]:
        """The sorted DESTs whose manifest `record` (or the action it undoes) writes to."""
        if record.get("undoes") is not None:
            record = self.actions[record["undoes"]]
        reviewed = (record.get("operation") or {}).get("reviewed")
        return [Path(reviewed["dest"])] if reviewed else []

    def relabel(self, photo: Photo, label: str) -> dict:
        """Give `photo` another label: a training photo moves to data/<label>/, a sorted copy
        is copied there (and its line in DEST's manifest records the label)."""
        folder = self.tf_files / "data" / label
        if photo.copy is None:
            operation = self._move(photo.path, folder, photo.path.name)
        else:
            name = safe_name_part(photo.copy.source_name or photo.path.name)
            operation = {
                "kind": COPY,
                "from": str(photo.path),
                "folder": str(folder),
                "name": free_name(folder, name),
                "reviewed": self._reviewed(photo, label),
            }
        record = self._record(
            RELABEL,
            photo=photo.id,
            sha256=photo.sha256,
            label=photo.label,
            to_label=label,
            operation=operation,
        )
        return self._apply(record)

    def remove(self, photo: Photo) -> dict:
        """Take a training photo out of training: into TF_FILES/removed/<label>/."""
        folder = self.tf_files / REMOVED / photo.label
        record = self._record(
            REMOVE,
            photo=photo.id,
            sha256=photo.sha256,
            label=photo.label,
            operation=self._move(photo.path, folder, photo.path.name),
        )
        return self._apply(record)

    def keep(self, item: Item) -> dict:
        """Mark a finding checked: not listed again while its photos hold what they do now."""
        photo = item.photos[0]
        record = self._record(
            KEEP,
            photo=photo.id,
            sha256=photo.sha256,
            label=photo.label,
            item=item.id,
            key=item.key,
            operation=None,
        )
        return self._apply(record)

    def to_undo(self, action: int | None = None) -> dict:
        """The record of `action` (default: the latest in effect), if it can be undone."""
        standing = self.standing()
        if action is None:
            if not standing:
                raise Refused(409, "nothing to undo")
            return standing[-1]
        target = self.actions.get(action)
        if target is None:
            raise Refused(404, f"no action {action} in the journal")
        if target not in standing:
            raise Refused(409, f"action {action} is not in effect (failed, an undo, or undone)")
        return target

    def undo(self, action: int | None = None) -> dict:
        """Take back `action` (default: the latest in effect) through the journal."""
        target = self.to_undo(action)
        operation = target["operation"]
        where = self.done[target["id"]].get("to")
        if operation is not None and content(Path(where)) != target["sha256"]:
            raise Refused(
                409, f"{where} changed or is gone since action {target['id']}; undo it by hand"
            )
        record = self._record(
            UNDO,
            photo=target["photo"],
            sha256=target["sha256"],
            label=target.get("to_label") or target["label"],
            undoes=target["id"],
            operation=self._reverse(operation, where),
        )
        return self._apply(record)

    def _reverse(self, operation: dict | None, where: str | None) -> dict | None:
        if operation is None:
            return None
        if operation["kind"] == MOVE:
            origin = Path(operation["from"])
            return {**self._move(Path(str(where)), origin.parent, origin.name), "tidy": True}
        reviewed = {**operation["reviewed"], "human": ""}
        return {
            "kind": DROP,
            "copy": where,
            "original": operation["from"],
            "reviewed": reviewed,
            "tidy": True,
        }

    @staticmethod
    def _move(path: Path, folder: Path, name: str) -> dict:
        return {
            "kind": MOVE,
            "from": str(path),
            "folder": str(folder),
            "name": free_name(folder, name),
        }

    @staticmethod
    def _reviewed(photo: Photo, label: str) -> dict:
        assert photo.copy is not None and photo.dest is not None
        return {
            "dest": str(photo.dest),
            "manifest": str(photo.copy.manifest),
            "destination": photo.copy.destination,
            "sha256": photo.sha256,
            "label": photo.copy.label,
            "human": label,
        }


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (or gone): it stays as it is
