"""The frozen blocks' output of every photo (its "boundary"), computed once for fine-tuning.

Fine-tuning trains the backbone's top blocks; the blocks below keep their pretrained
weights, so their output for a photo never changes. It is computed once per photo, on the
engine that computes the features (OpenVINO on a CPU, in the precision the exported model
will run in), and kept in a file mapped into memory rather than in memory: 139 KB a photo
for Lite2's top 6 blocks at 260 px (the default), so a hundred thousand photos need not
fit.

The same pass serves the features: the pretrained top blocks, run on a photo's boundary,
give what the whole backbone gives (`FeaturesFromBoundaries`), so a training run that
fine-tunes decodes each photo and runs the bottom of the backbone once, not twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tensorguess.data.images import pixel_batches
from tensorguess.errors import TensorguessError
from tensorguess.features.backbones import Backbone
from tensorguess.features.bottlenecks import BATCH_SIZE
from tensorguess.features.engines import Runner, function_runner, run_ahead
from tensorguess.progress import progress_bar


@dataclass
class StoredBoundaries:
    """The bottom's output for a list of photos, row i for photo i; a photo that could not
    be read has zeros, and `problems` says why."""

    values: np.ndarray
    problems: dict[int, str] = field(default_factory=dict)


def split_backbone(backbone: Backbone, blocks: int):
    """(frozen bottom, trainable top) Keras models: the top is the last `blocks` blocks and
    the head conv.

    Both share the backbone model's layers, so training the top changes the backbone.
    """
    return split_model(getattr(backbone, "model", None), blocks, backbone.name)


def split_model(model, blocks: int, name: str):
    """`split_backbone` of a Keras model of the backbone's layout (`name` for the errors)."""
    import keras

    layers = model.layers if isinstance(model, keras.Model) else []
    indices = sorted(
        {int(layer.name[5:].split("_")[0]) for layer in layers if layer.name[:5] == "block"}
    )
    if not indices:
        raise TensorguessError(
            f"--fine_tune works with the efficientnet_lite backbones only, not {name}"
        )
    if not 1 <= blocks < len(indices):
        raise TensorguessError(
            f"--fine_tune_blocks must be between 1 and {len(indices) - 1} for this backbone"
        )
    last_frozen = indices[-blocks - 1]
    names = {layer.name for layer in model.layers}
    cut = f"block{last_frozen}_add"
    if cut not in names:
        cut = f"block{last_frozen}_project_conv"
    boundary = model.get_layer(cut).output
    return keras.Model(model.input, boundary), keras.Model(boundary, model.output)


def bottom_runner(backbone: Backbone, blocks: int, engine: str | None) -> Runner:
    """`run(pixels uint8 [B, S, S, 3]) -> boundaries` of the blocks below the top `blocks`,
    on `engine` (OpenVINO on a CPU: several times TensorFlow's speed). The bottom keeps its
    pretrained weights, so its converted model is cached like the backbone's."""
    bottom, _ = split_backbone(backbone, blocks)
    size = backbone.image_size
    run, _ = function_runner(
        lambda pixels: bottom(backbone.preprocess(pixels), training=False),
        (size, size, 3),
        engine,
        cache_key=f"bottom-{backbone.cache_key}-top{blocks}",
        whole_pixels=True,
    )
    return run


def top_runner(backbone: Backbone, blocks: int, engine: str | None) -> Runner:
    """`run(boundaries) -> features [B, D]` of the pretrained top `blocks` blocks, on `engine`,
    converted once per machine. Build it before fine-tuning changes the weights: its cache
    key names the pretrained ones."""
    _, top = split_backbone(backbone, blocks)
    run, _ = function_runner(
        lambda boundaries: top(boundaries, training=False),
        tuple(top.input.shape[1:]),
        engine,
        cache_key=f"top-{backbone.cache_key}-top{blocks}",
    )
    return run


def store_boundaries(
    run_bottom: Runner,
    paths: Sequence[Path],
    size: int,
    file: Path,
    mirror: bool = False,
    label: str = "",
) -> StoredBoundaries:
    """The bottom's output for every photo of `paths` (its mirror image with `mirror`), in
    `file`, mapped into memory; `label` names the progress bar."""
    values = None
    problems: dict[int, str] = {}
    start = 0
    batches = pixel_batches(paths, size, BATCH_SIZE)
    if mirror:
        batches = ((np.ascontiguousarray(pixels[:, :, ::-1]), why) for pixels, why in batches)
    with progress_bar(len(paths), label or "Frozen blocks", unit="img") as bar:
        for boundary, reasons in run_ahead(run_bottom, batches):
            if values is None:
                values = np.lib.format.open_memmap(
                    file, mode="w+", dtype=np.float32, shape=(len(paths), *boundary.shape[1:])
                )
            values[start : start + len(boundary)] = boundary
            problems.update(
                (start + offset, reason) for offset, reason in enumerate(reasons) if reason
            )
            start += len(boundary)
            bar.update(len(boundary))
    return StoredBoundaries(values if values is not None else np.zeros((0,), np.float32), problems)


class FeaturesFromBoundaries:
    """`cached_features`' `compute` for photos whose boundaries are stored: the pretrained
    top blocks finish their features, and the photos are not decoded again."""

    def __init__(self, stored: StoredBoundaries, paths: Sequence[Path], run_top: Runner):
        self.stored = stored
        self.rows = {Path(path): row for row, path in enumerate(paths)}
        self.run_top = run_top

    def __call__(
        self,
        backbone: Backbone,
        paths: Sequence[Path],
        batch_size: int = BATCH_SIZE,
        label: str = "",
        engine: str | None = None,
        view=None,
    ) -> Iterator[tuple[range, np.ndarray, list[str]]]:
        """(indices, features [B, D], reasons) for `paths`, batch by batch, in order."""
        if view is not None:
            raise ValueError("distorted views are not stored: compute them from the photos")
        rows = np.array([self.rows[Path(path)] for path in paths], dtype=np.int64)
        batches = (
            (self.stored.values[rows[start : start + batch_size]], start)
            for start in range(0, len(rows), batch_size)
        )
        with progress_bar(len(rows), label or "Computing features", unit="img") as bar:
            for features, start in run_ahead(self.run_top, batches):
                chunk = rows[start : start + len(features)]
                yield (
                    range(start, start + len(chunk)),
                    features,
                    [self.stored.problems.get(int(row), "") for row in chunk],
                )
                bar.update(len(chunk))
