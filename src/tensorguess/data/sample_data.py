"""A small sample dataset for trying the workflow on a fresh clone: photos of drawn shapes."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tensorguess.errors import TensorguessError

SHAPES = ("circle", "square", "triangle")
SIZE = 256
TEST_PER_LABEL = 4


@dataclass(frozen=True)
class SampleDataset:
    """Where the sample went and how many photos."""

    data_dir: Path
    test_dir: Path
    training: int
    test: int


def draw_shape(shape: str, rng: random.Random, size: int = SIZE) -> Image.Image:
    """One photo-like picture: a coloured `shape` on a noisy, tinted background."""
    background = tuple(rng.randrange(90, 256) for _ in range(3))
    # The noise from `rng` too (Pillow's effect_noise draws from C's rand(), unseeded): the
    # same seed gives the same photo in every process.
    noise = np.random.default_rng(rng.getrandbits(64)).normal(
        128, rng.uniform(10, 40), (size, size)
    )
    image = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8)).convert("RGB")
    image = Image.blend(image, Image.new("RGB", (size, size), background), 0.75)
    draw = ImageDraw.Draw(image)
    colour = tuple(rng.randrange(0, 120) for _ in range(3))
    radius = rng.uniform(0.2, 0.38) * size
    cx, cy = (rng.uniform(radius, size - radius) for _ in range(2))
    angle = rng.uniform(0, 2 * math.pi)
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
    else:
        corners = 4 if shape == "square" else 3
        points = [
            (
                cx + radius * math.cos(angle + 2 * math.pi * k / corners),
                cy + radius * math.sin(angle + 2 * math.pi * k / corners),
            )
            for k in range(corners)
        ]
        draw.polygon(points, fill=colour)
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))


def write_sample_dataset(directory: Path, per_label: int = 60, seed: int = 0) -> SampleDataset:
    """Write `directory/data/<shape>/*.jpg` and unlabelled `directory/test_images/*.jpg`."""
    directory = Path(directory)
    data_dir, test_dir = directory / "data", directory / "test_images"
    for folder in (data_dir, test_dir):
        if folder.exists() and any(folder.iterdir()):
            raise TensorguessError(
                f"{folder} already has files; sample-data only writes into empty folders"
            )
    rng = random.Random(seed)
    for shape in SHAPES:
        (data_dir / shape).mkdir(parents=True, exist_ok=True)
        for number in range(per_label):
            draw_shape(shape, rng).save(data_dir / shape / f"{shape}_{number:03d}.jpg", quality=90)
    test_dir.mkdir(parents=True, exist_ok=True)
    test_shapes = [shape for shape in SHAPES for _ in range(TEST_PER_LABEL)]
    rng.shuffle(test_shapes)
    for number, shape in enumerate(test_shapes):
        draw_shape(shape, rng).save(test_dir / f"photo_{number:02d}.jpg", quality=90)
    return SampleDataset(data_dir, test_dir, per_label * len(SHAPES), len(test_shapes))
