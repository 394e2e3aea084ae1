"""Fuzzing the decoder: mutated image bytes give pixels or a one-line reason, nothing else.

Seeds are small files of every format (helpers.encode_formats, and rarer ones Pillow also
opens); hypothesis flips, inserts and cuts bytes. The budget is fixed (a number of
examples, derandomised so CI replays the same ones): about 15 seconds on 2 cores.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import drawn, encode_formats
from tensorguess.data.images import UnreadableImage, load_pixels, pixel_batches

SIZE = 32
# Formats a photo folder rarely holds but Pillow opens all the same: their parsers raise
# the most varied exceptions (IndexError, NotImplementedError, struct.error...).
RARER_FORMATS = ("ICO", "TGA", "PCX", "PPM", "JPEG2000", "SGI", "DDS", "QOI", "XBM", "MSP")


def _seeds() -> list[bytes]:
    seeds = [data for _, data in encode_formats("circle", 5, size=48).values()]
    picture = drawn("circle", 5, size=48)
    for name in RARER_FORMATS:
        stream = io.BytesIO()
        (picture.convert("1") if name in ("XBM", "MSP") else picture).save(stream, format=name)
        seeds.append(stream.getvalue())
    return seeds


SEEDS = _seeds()


def _decode(data: bytes, folder: Path) -> str:
    """Decode `data`; the reason it was refused, or "" when it gave pixels."""
    path = folder / "fuzzed"
    path.write_bytes(data)
    try:
        pixels = load_pixels(path, SIZE)
    except UnreadableImage as refused:
        reason = str(refused)
        assert reason and "\n" not in reason
        return reason
    assert pixels.shape == (SIZE, SIZE, 3) and pixels.dtype == np.uint8
    return ""


@st.composite
def mutated(draw) -> bytes:
    """One seed with a few bytes flipped or inserted, and maybe cut short."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        # Half the changes hit the header, where the parsers are.
        end = min(len(data), 128) if draw(st.booleans()) else len(data)
        position = draw(st.integers(0, end - 1))
        value = draw(st.integers(0, 255))
        if draw(st.booleans()):
            data[position] = value
        else:
            data.insert(position, value)
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@settings(
    max_examples=4000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=mutated())
def test_mutated_images_decode_or_are_refused_cleanly(data, tmp_path):
    _decode(data, tmp_path)


def test_mutated_images_do_not_stop_the_training_pipeline(tmp_path):
    # The threaded batch path: an exception escaping a decoder would end every batch.
    rng = random.Random(0)
    paths = []
    for number in range(60):
        data = bytearray(rng.choice(SEEDS))
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path = tmp_path / f"{number}.img"
        path.write_bytes(bytes(data[: rng.randrange(len(data) // 2, len(data) + 1)]))
        paths.append(path)
    reasons = [reason for _, batch in pixel_batches(paths, SIZE, 16) for reason in batch]
    assert reasons == [_decode(path.read_bytes(), tmp_path) for path in paths]
