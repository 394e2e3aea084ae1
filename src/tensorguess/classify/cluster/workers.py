"""What runs on the Ray workers, and the driver's side of it: guessDir's classification and
train's missing features (connection.py says what is promised).

The workers are Ray Data actors (a callable class: the model is loaded once per actor, in
`__init__`; `__call__` takes a batch of paths and returns their scores or features). A worker
that cannot see the photos' folder, or cannot load its model, says so with each batch, and
the driver ends the run with that one line.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tensorguess.classify.classifier import Classifier
from tensorguess.classify.cluster.connection import SHARED_STORAGE, RayCluster, Shared
from tensorguess.classify.exported import ExportedClassifier
from tensorguess.classify.loading import load_classifier
from tensorguess.classify.prediction import Scorer
from tensorguess.errors import TensorguessError, first_line
from tensorguess.features.engines.int8 import INT8_FOLDER
from tensorguess.model_files import METADATA_FILE
from tensorguess.progress import progress_bar


def common_folder(paths: Sequence[str]) -> str:
    """The folder every one of `paths` lies in (SRC, or TF_FILES/data)."""
    return os.path.commonpath([os.path.dirname(path) for path in paths])


class _Worker:
    """What both actors share: a check that the photos' folder is visible on this node, and
    a problem of their own start-up, reported with each batch instead of dying."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.problem = ""

    def worker_problem(self) -> str:
        """Why this worker cannot do its work, or ""."""
        if self.problem:
            return self.problem
        if os.path.isdir(self.folder) and os.access(self.folder, os.R_OK | os.X_OK):
            return ""
        import ray

        return (
            f"{self.folder}: not found by the Ray worker on {ray.util.get_node_ip_address()}: "
            f"the photos must be on storage that every Ray node sees at the same path "
            f"{SHARED_STORAGE}"
        )

    def fail(self, error: BaseException) -> None:
        """Remember a start-up failure: each batch then carries it to the driver."""
        text = str(error) if isinstance(error, TensorguessError) else first_line(error)
        self.problem = f"a Ray worker could not load the model: {text}"


@dataclass(frozen=True)
class ModelFiles:
    """A trained model as the workers rebuild it: its files (relative name -> bytes), which
    of them is what, and the flags.

    Everything the local classifier reads travels: the graph, its labels, tensorguess.json
    and the int8 model train kept beside it (so workers on CPUs run the model a local sort
    runs); or the exported .tflite/.onnx file given with --model, which holds its labels.
    """

    files: dict[str, bytes]
    graph: str | None
    labels: str | None
    model: str | None
    overrides: dict
    engine: str | None

    @classmethod
    def of(
        cls, classifier: Classifier | ExportedClassifier, overrides: dict | None, engine: str | None
    ) -> ModelFiles:
        """The files a loaded classifier (`Classifier` or `ExportedClassifier`) came from."""
        overrides = dict(overrides or {})
        if isinstance(classifier, ExportedClassifier):
            name = f"model{classifier.graph_path.suffix.lower()}"
            files = {name: classifier.graph_path.read_bytes()}
            return cls(files, None, None, name, overrides, engine)
        graph, labels = classifier.graph_path, classifier.labels_path
        files = {"graph.pb": graph.read_bytes(), "labels.txt": labels.read_bytes()}
        metadata = graph.with_name(METADATA_FILE)
        if metadata.is_file():
            files[METADATA_FILE] = metadata.read_bytes()
        int8 = graph.with_name(INT8_FOLDER)
        if int8.is_dir():
            for path in sorted(int8.iterdir()):
                files[f"{INT8_FOLDER}/{path.name}"] = path.read_bytes()
        return cls(files, "graph.pb", "labels.txt", None, overrides, engine)

    def load(self, scratch: Path) -> Scorer:
        """The classifier, from the files written into `scratch` (which may go once it is
        loaded: the classifier keeps what it needs in memory)."""
        for name, data in self.files.items():
            path = scratch / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if self.model is not None:
            return load_classifier(None, model=scratch / self.model)
        return load_classifier(
            None, scratch / self.graph, scratch / self.labels, self.overrides, self.engine
        )


class ClassifyWorker(_Worker):
    """A Ray actor that loads the classifier once and scores batches of photos."""

    def __init__(self, model: Shared, folder: str) -> None:
        super().__init__(folder)
        try:
            files: ModelFiles = model.get()
            with tempfile.TemporaryDirectory(prefix="tensorguess-model-") as scratch:
                self.classifier = files.load(Path(scratch))
        except Exception as error:  # noqa: BLE001  (said once, by the driver, in one line)
            self.fail(error)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Predictions (`prediction.Prediction`) for a batch of paths, in order."""
        paths = [Path(path) for path in batch["path"]]
        predictions = np.empty(len(paths), dtype=object)
        problem = self.worker_problem()
        if not problem:
            for index, prediction in enumerate(self.classifier.classify(paths, len(paths))):
                predictions[index] = prediction
        return {"prediction": predictions, "worker_problem": np.array([problem] * len(paths))}


class ClusterClassifier:
    """A classifier whose `classify` runs on Ray workers: `sort.sort_folder` takes it as it
    takes the local one (`labels`, `classify(paths, batch_size)`)."""

    def __init__(
        self,
        cluster: RayCluster,
        classifier,
        overrides: dict | None = None,
        engine: str | None = None,
    ) -> None:
        self.cluster = cluster
        self.labels = classifier.labels
        # The workers load the same files (tensorguess.json too), so they mark the same
        # photos unknown as a local sort would.
        self.graph_path = classifier.graph_path
        self.novelty_threshold = classifier.novelty_threshold
        self.task = classifier.task  # a multi-label model's copies go into label folders
        # The engine as asked for: each worker resolves `auto` itself (TensorFlow on a GPU).
        self._model = ModelFiles.of(classifier, overrides, engine)

    def classify(self, paths: Sequence[Path], batch_size: int = 64):
        """Predictions for `paths`, computed on the cluster, in the order of `paths`."""
        if not paths:
            return
        originals = {os.path.abspath(path): Path(path) for path in paths}
        absolute = list(originals)
        arguments = {"model": self.cluster.share(self._model), "folder": common_folder(absolute)}
        for batch in self.cluster.map(ClassifyWorker, arguments, absolute, batch_size):
            for prediction in batch["prediction"]:
                yield replace(prediction, path=originals[str(prediction.path)])


class FeatureWorker(_Worker):
    """A Ray actor that loads a backbone once and computes features of batches of photos."""

    def __init__(
        self, backbone: str, image_size: int, cache_key: str, engine: str, view, folder: str
    ) -> None:
        super().__init__(folder)
        from tensorguess.features.bottlenecks import features_runner_of
        from tensorguess.features.engines import engine_precision

        self.image_size = image_size
        self.view = view
        try:
            self.run, used = features_runner_of(backbone, image_size, cache_key, engine)
            self.precision = engine_precision(used)
        except Exception as error:  # noqa: BLE001  (said once, by the driver, in one line)
            self.fail(error)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Features [B, D] of a batch of paths, the reasons of the failed ones, the precision."""
        from tensorguess.data.images import pixel_batches

        paths = list(batch["path"])
        count = len(paths)
        problem = self.worker_problem()
        if problem:
            return {
                "features": np.zeros((count, 1), np.float32),
                "reason": np.array([""] * count),
                "precision": np.array([""] * count),
                "worker_problem": np.array([problem] * count),
            }
        pixels, reasons = next(pixel_batches(paths, self.image_size, count))
        if self.view is not None:
            pixels = self.view(pixels)
        return {
            "features": np.asarray(self.run(pixels), np.float32),
            "reason": np.array(reasons, dtype=str),
            "precision": np.array([self.precision] * count),
            "worker_problem": np.array([""] * count),
        }


class ClusterFeatures:
    """`bottlenecks.compute_features`, computed on Ray workers: `cached_features` takes it as
    its `compute` and stores what comes back under the same keys as always."""

    def __init__(self, cluster: RayCluster, backbone_spec: str) -> None:
        self.cluster = cluster
        self.backbone_spec = backbone_spec

    def __call__(
        self,
        backbone,
        paths: Sequence[Path],
        batch_size: int = 64,
        label: str = "",
        engine: str | None = None,
        view=None,
    ):
        """Yield (indices, vectors [B, D], reasons) for `paths`, batch by batch, in order."""
        from tensorguess.features.engines import engine_precision, resolved_engine

        if not paths:
            return
        engine = resolved_engine(engine)
        expected = engine_precision(engine)
        absolute = [os.path.abspath(path) for path in paths]
        arguments = {
            "backbone": self.backbone_spec,
            "image_size": backbone.image_size,
            "cache_key": backbone.cache_key,
            "engine": engine,
            "view": view,
            "folder": common_folder(absolute),
        }
        start = 0
        description = label or "Computing features on Ray"
        with progress_bar(len(paths), description, unit="img") as bar:
            for batch in self.cluster.map(FeatureWorker, arguments, absolute, batch_size):
                precision = str(batch["precision"][0])
                if precision != expected:
                    raise TensorguessError(
                        f"the Ray workers compute features in {precision}, this machine in "
                        f"{expected}, and one feature cache cannot mix them: train with "
                        "--engine openvino-f32 (or tensorflow) to compute in float32 everywhere"
                    )
                count = len(batch["features"])
                yield range(start, start + count), batch["features"], list(batch["reason"])
                start += count
                bar.update(count)
