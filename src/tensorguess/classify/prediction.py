"""What every classifier answers: a prediction per photo, and what a sort needs of one.

It imports nothing else of tensorguess (but the task's type, for type checkers), so the
classifier of TF_FILES (classifier.py), of an exported file (exported.py), of a Ray cluster
(cluster/) and the HTTP server share these types without importing one another.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from tensorguess.classify.task import Task

BATCH_SIZE = 64


@dataclass(frozen=True)
class Prediction:
    """The scores of one image (aligned with the labels), or why there are none.

    `novelty` says how unlike every training photo the image is (None when the model has no
    such score); `unknown` whether it is past the model's threshold. A multi-label model's
    prediction also has the `labels` it gives the image (those over their thresholds, best
    first, maybe none); a single-label one's is None (its answer is its best score).
    """

    path: Path
    scores: np.ndarray | None
    problem: str = ""
    novelty: float | None = None
    unknown: bool | None = None
    labels: tuple[str, ...] | None = None

    def ranked(self, labels: Sequence[str], top_k: int | None = None) -> list[tuple[str, float]]:
        """(label, score) pairs, best first."""
        assert self.scores is not None
        order = np.argsort(-self.scores, kind="stable")[:top_k]
        return [(labels[i], float(self.scores[i])) for i in order]

    def to_json(self, labels: Sequence[str], top_k: int | None = None) -> dict:
        """The prediction as `guess --json` prints it: labels best first (and, multi-label,
        the `labels` given), or the error."""
        if self.scores is None:
            return {"image": str(self.path), "error": self.problem}
        ranked = self.ranked(labels, top_k)
        answer = {
            "image": str(self.path),
            "predictions": [{"label": label, "score": score} for label, score in ranked],
        }
        if self.labels is not None:
            answer["labels"] = list(self.labels)
        if self.novelty is not None:
            answer.update(novelty=self.novelty, unknown=self.unknown)
        return answer


class Scorer(Protocol):
    """What a sort needs of a classifier: its labels, the file it came from, its novelty
    threshold (None without one), its task (`task.Task`: how its scores become labels and
    where a sorted photo goes), and a prediction for each path (in any order).
    `classifier.Classifier` computes them here; `cluster.workers.ClusterClassifier` on Ray;
    `exported.ExportedClassifier` from a .tflite or .onnx file."""

    labels: list[str]
    graph_path: Path
    novelty_threshold: float | None
    task: Task

    def classify(
        self, paths: Sequence[Path], batch_size: int = BATCH_SIZE
    ) -> Iterator[Prediction]: ...
