"""Backbone features ("bottlenecks"), computed in batches and cached by content and backbone.

An entry lives at `bottlenecks/<features key>/<sha256[:2]>/<sha256>.npy`, keyed by the
file's bytes, so renaming or moving a photo costs nothing, and a second run (or a run
after adding ten photos) computes only what is new. The features key names everything
that shapes a feature: the backbone's own key (its weights' digest, conversion version and
image size), the decoder's version and the precision of the arithmetic.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Protocol

import numpy as np

from tensorguess.data.images import DECODER_VERSION
from tensorguess.errors import TensorguessError
from tensorguess.features.backbones import Backbone
from tensorguess.features.engines import (
    FLOAT32,
    INT8_ENGINE,
    INT8_NEEDS_PHOTOS,
    cached_runner,
    engine_precision,
    function_runner,
    resolved_engine,
    run_ahead,
)
from tensorguess.features.engines.int8 import INT8, Calibration
from tensorguess.files import file_digest, write_bytes_atomic
from tensorguess.progress import progress_bar

BATCH_SIZE = 64


class PixelView(Protocol):
    """A change made to the decoded pixels before the network (a distorted view)."""

    cache_name: str

    def __call__(self, pixels: np.ndarray) -> np.ndarray: ...


class ComputeFeatures(Protocol):
    """`compute_features`' contract: (indices, vectors [B, D], reasons) per batch, in order."""

    def __call__(
        self,
        backbone: Backbone,
        paths: Sequence[Path],
        batch_size: int = BATCH_SIZE,
        label: str = "",
        engine: str | None = None,
        view: PixelView | None = None,
    ) -> Iterator[tuple[range, np.ndarray, list[str]]]: ...


class BottleneckCache:
    """Feature vectors on disk, one `.npy` per distinct image content (and view of it)."""

    def __init__(
        self,
        root: Path,
        backbone: Backbone,
        engine: str | None = None,
        view: str = "",
        calibration: Calibration | None = None,
    ):
        self.folder = Path(root) / features_key(backbone, engine, calibration) / view
        self.feature_dim = backbone.feature_dim

    def path_for(self, digest: str) -> Path:
        """Where the features of content `digest` are stored."""
        return self.folder / digest[:2] / f"{digest}.npy"

    def get(self, digest: str) -> np.ndarray | None:
        """The cached vector, or None when absent or damaged (then it is recomputed)."""
        try:
            vector = np.load(self.path_for(digest), allow_pickle=False)
        except Exception:  # noqa: BLE001  (a damaged entry, whatever it holds, is recomputed)
            return None
        if vector.shape != (self.feature_dim,) or not np.all(np.isfinite(vector)):
            return None
        return vector.astype(np.float32, copy=False)

    def put(self, digest: str, vector: np.ndarray) -> None:
        """Store one vector atomically."""
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(vector, dtype=np.float32), allow_pickle=False)
        # Not fsynced: `get` checks every entry and a damaged one is computed again.
        write_bytes_atomic(self.path_for(digest), buffer.getvalue(), durable=False)


@dataclass
class Features:
    """Features for a list of files: rows aligned with the input, and what failed."""

    vectors: np.ndarray
    ok: np.ndarray
    problems: dict[int, str] = field(default_factory=dict)
    computed: int = 0
    cached: int = 0
    shared: int = 0  # identical photos that got the features of an identical one

    def describe(self) -> str:
        """What was computed and reused, in words, for the training log."""
        text = f"{self.computed} computed, {self.cached} from cache"
        if self.shared:
            text += f", {self.shared} identical {_photos(self.shared)} shared them"
        return text


def _photos(count: int) -> str:
    return "photo" if count == 1 else "photos"


def features_key(
    backbone: Backbone, engine: str | None = None, calibration: Calibration | None = None
) -> str:
    """The cache folder name of `backbone`'s features as `engine` computes them.

    TensorFlow and OpenVINO in float32 agree within 1e-5 and share entries; a lower
    precision (OpenVINO's bfloat16) gets its own, so the two never mix in one training set;
    int8 features also depend on the photos their scales were measured on (`calibration`).
    A new decoder (images.DECODER_VERSION) gives new pixels, hence new entries.
    """
    precision = engine_precision(resolved_engine(engine))
    key = f"{backbone.cache_key}-d{DECODER_VERSION}"
    if precision == INT8 and calibration is not None:
        return f"{key}-{precision}-{calibration.digest[:16]}"
    return key if precision == FLOAT32 else f"{key}-{precision}"


@lru_cache(maxsize=4)
def features_runner(
    backbone: Backbone, engine: str | None = None, calibration: Calibration | None = None
):
    """`run(pixels [B, S, S, 3]) -> features [B, D]` on the chosen engine, and that engine.

    Kept per backbone in the process, and converted models on disk: freezing the backbone
    and converting it costs seconds, paid once per machine (an int8 one once per set of
    `calibration` photos).
    """
    cache_key = _runner_key(backbone.cache_key)
    if resolved_engine(engine) == INT8_ENGINE:
        if calibration is None:
            raise TensorguessError(INT8_NEEDS_PHOTOS)
        cache_key = f"{cache_key}-{INT8}-{calibration.digest[:16]}"
    size = backbone.image_size
    return function_runner(
        backbone.features,
        (size, size, 3),
        engine,
        cache_key=cache_key,
        whole_pixels=True,
        calibration=calibration,
    )


def _runner_key(backbone_key: str) -> str:
    return f"features-{backbone_key}"  # pixels in: the decoder plays no part


def features_runner_of(spec: str, image_size: int, backbone_key: str, engine: str | None = None):
    """`features_runner` of the backbone named `spec`, built only when no converted model of
    it is cached (a Ray worker, which knows the backbone by name and key, starts fast)."""
    if resolved_engine(engine) == INT8_ENGINE:
        raise TensorguessError(INT8_NEEDS_PHOTOS)
    cached = cached_runner(_runner_key(backbone_key), engine)
    if cached is not None:
        return cached[:2]
    from tensorguess.features.backbones import get_backbone

    backbone = get_backbone(spec, image_size)
    if backbone.cache_key != backbone_key:
        raise TensorguessError(
            f"backbone {spec} is {backbone.cache_key} here but {backbone_key} on the driver: "
            "install the same tensorguess release everywhere"
        )
    return features_runner(backbone, engine)


def compute_features(
    backbone: Backbone,
    paths: Sequence[Path],
    batch_size: int = BATCH_SIZE,
    label: str = "",
    engine: str | None = None,
    view: PixelView | None = None,
    calibration: Calibration | None = None,
):
    """Yield (indices, vectors [B, D], reasons) for `paths`, batch by batch, in order.

    Decoding threads work ahead, and the backbone runs on the next batch while the caller
    stores this one (and the next batch's `view` is made). `calibration` is for
    `openvino-int8`.
    """
    from tensorguess.data.images import pixel_batches

    if not paths:
        return
    extract, _ = features_runner(backbone, engine, calibration)
    start = 0
    with progress_bar(len(paths), label or "Computing features", unit="img") as bar:
        batches = pixel_batches(paths, backbone.image_size, batch_size)
        if view is not None:
            batches = ((view(pixels), reasons) for pixels, reasons in batches)
        for vectors, reasons in run_ahead(extract, batches):
            count = len(vectors)
            yield range(start, start + count), vectors, reasons
            start += count
            bar.update(count)


def cached_features(
    backbone: Backbone,
    paths: Sequence[Path],
    cache_root: Path,
    batch_size: int = BATCH_SIZE,
    digests: Sequence[str | None] | None = None,
    engine: str | None = None,
    view: PixelView | None = None,
    compute: ComputeFeatures | None = None,
    calibration: Calibration | None = None,
) -> Features:
    """Features for `paths` (or for a `view` of them), from the cache where present,
    computed and stored otherwise.

    `digests` are the files' SHA-256 when the caller has them already (the scan does).
    `compute` computes the missing ones (default `compute_features`, here; a Ray cluster's
    `ClusterFeatures`, classify/cluster/workers.py); they are stored here either way.
    `calibration`: the photos `openvino-int8` measures its scales on (engines/int8.py).
    """
    name = view.cache_name if view else ""
    cache = BottleneckCache(cache_root, backbone, engine, name, calibration)
    if compute is None:
        compute = partial(compute_features, calibration=calibration)
    vectors = np.zeros((len(paths), backbone.feature_dim), np.float32)
    ok = np.zeros(len(paths), bool)
    problems: dict[int, str] = {}
    if digests is None:
        digests = [_digest_or_problem(path, index, problems) for index, path in enumerate(paths)]
    # Identical photos share one computation.
    missing: dict[str, list[int]] = {}
    for index, digest in enumerate(digests):
        if digest is None:
            continue
        vector = cache.get(digest)
        if vector is None:
            missing.setdefault(digest, []).append(index)
        else:
            vectors[index], ok[index] = vector, True
    cached = int(ok.sum())
    todo = [indices[0] for indices in missing.values()]
    computed = 0
    for positions, batch, reasons in compute(
        backbone, [paths[i] for i in todo], batch_size, engine=engine, view=view
    ):
        for position, vector, reason in zip(positions, batch, reasons, strict=True):
            digest = digests[todo[position]]
            if reason:
                for index in missing[digest]:
                    problems[index] = reason
                continue
            cache.put(digest, vector)
            computed += 1
            for index in missing[digest]:
                vectors[index], ok[index] = vector, True
    shared = sum(len(indices) - 1 for indices in missing.values() if ok[indices[0]])
    return Features(vectors, ok, problems, computed=computed, cached=cached, shared=shared)


def _digest_or_problem(path: Path, index: int, problems: dict[int, str]) -> str | None:
    try:
        return file_digest(path)
    except OSError as error:
        problems[index] = f"cannot read ({error.strerror or error})"
        return None
