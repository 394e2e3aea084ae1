"""Helpers the tests share: photos they draw themselves, odd and broken image files, the
commands run as a user runs them, and the old tools' code paths to compare against.

Tests import from here, never from conftest (fixtures only) or from each other.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import struct
import subprocess
import sys
import zlib
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image
from pillow_heif import register_heif_opener

from tensorguess.data.sample_data import draw_shape

register_heif_opener()  # to write the HEIC case

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SUPERHEROES = SHARED / "datasets" / "superheroes"
LABELS = ("circle", "square")


# Photos drawn by the tests ----------------------------------------------------------------


def draw_photos(folder: Path, label: str, count: int, seed: int, prefix: str = "") -> list[Path]:
    """Write `count` JPEG photos of `label` (a shape) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{label}-{seed}")
    paths = []
    for number in range(count):
        path = folder / f"{prefix or label}_{seed}_{number:03d}.jpg"
        draw_shape(label, rng, size=160).save(path, quality=90)
        paths.append(path)
    return paths


def make_tf_files(root: Path, per_label: int = 24, seed: int = 0) -> Path:
    """A tf_files folder with data/circle and data/square."""
    for label in LABELS:
        draw_photos(root / "data" / label, label, per_label, seed)
    return root


def colour_photos(folder: Path, colour, count: int, seed: int) -> None:
    """`count` noisy PNGs of one colour: what a colour-feature model separates."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for number in range(count):
        noise = rng.normal(0, 25, size=(40, 40, 3))
        pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{number:02d}.png")


def save_colour_features_model(folder: Path) -> Path:
    """A stand-in image feature-vector SavedModel: per-channel means and a fixed projection."""
    import tensorflow as tf

    class ColourFeatures(tf.Module):
        def __init__(self):
            super().__init__()
            self.projection = tf.Variable(
                np.random.default_rng(0).normal(size=(3, 8)), dtype=tf.float32
            )

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
        def __call__(self, images):
            means = tf.reduce_mean(images, axis=[1, 2])
            return tf.concat([means, tf.matmul(means, self.projection)], axis=1)

    tf.saved_model.save(ColourFeatures(), str(folder))
    return folder


# The commands, as a user runs them ---------------------------------------------------------


def run(*command: str | Path, cwd: Path | None = None, check: bool = True, **env: str):
    """Run a command, capturing text output; fail with its output when `check` and rc != 0."""
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=600,
    )
    if check and result.returncode != 0:
        pytest.fail(f"{command} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def tensorguess(*arguments: str | Path, **kwargs):
    """Run the `tensorguess` command line in a subprocess, as a user would."""
    return run(sys.executable, "-m", "tensorguess", *arguments, **kwargs)


def in_process(*arguments: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    """The `tensorguess` command line run in this process, as CliRunner would: the same
    parser, output and exit code, without paying TensorFlow's import again (seconds a run).
    For tests of what a command computes; what only a process shows (its own imports, a
    kill, a wrapper script) needs `tensorguess` or `wrapper`."""
    from tensorguess.cli import main

    command = [str(argument) for argument in arguments]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(command)
        except SystemExit as exit:  # argparse's refusals
            code = exit.code
    result = subprocess.CompletedProcess(command, code, out.getvalue(), err.getvalue())
    if check and code != 0:
        pytest.fail(f"{command} exited {code}\n{result.stdout}\n{result.stderr}")
    return result


def wrapper(script: str, *arguments: str | Path, **kwargs):
    """Run one of the user's scripts (train.sh, guess.sh, guessDir.sh) with bash."""
    return run("bash", ROOT / script, *arguments, **kwargs)


def one_line_error(result, *words, code: int = 1) -> str:
    """The single `tensorguess: error:` line of a failed run, holding every one of `words`."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("tensorguess: error:")]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# The old tools' code paths -----------------------------------------------------------------


def label_image_2016(graph_path, labels_path, image_path):
    """label_image.py (2016) as it was, under tf.compat.v1: feed bytes, read final_result."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    labels = [line.rstrip() for line in tf1.gfile.GFile(str(labels_path))]
    with tf.Graph().as_default():
        graph_def = tf1.GraphDef()
        with tf1.gfile.FastGFile(str(graph_path), "rb") as stream:
            graph_def.ParseFromString(stream.read())
        tf.import_graph_def(graph_def, name="")
        image_data = tf1.gfile.FastGFile(str(image_path), "rb").read()
        with tf1.Session() as session:
            softmax = session.graph.get_tensor_by_name("final_result:0")
            predictions = session.run(softmax, {"DecodeJpeg/contents:0": image_data})
    return labels, predictions


def label_image_2017(graph_path, image_paths, input_layer, size, mean, std) -> np.ndarray:
    """TensorFlow for Poets 2's label_image.py (2017) as it was, under tf.compat.v1.

    Its `read_tensor_from_image_file` (decode_jpeg, resize_bilinear, normalise) and one
    session run per photo feeding `input_layer`, reading `final_result`: [photos, labels].
    """
    import tensorflow as tf

    tf1 = tf.compat.v1
    graph_def = tf1.GraphDef()
    graph_def.ParseFromString(Path(graph_path).read_bytes())
    scores = []
    for image_path in image_paths:
        with tf.Graph().as_default():
            reader = tf1.read_file(str(image_path), "file_reader")
            image = tf1.image.decode_jpeg(reader, channels=3, name="jpeg_reader")
            expanded = tf.expand_dims(tf.cast(image, tf.float32), 0)
            resized = tf1.image.resize_bilinear(expanded, [size, size])
            normalized = tf.divide(tf.subtract(resized, [mean]), [std])
            with tf1.Session() as session:
                pixels = session.run(normalized)
        with tf.Graph().as_default() as graph:
            tf.import_graph_def(graph_def, name="")
            with tf1.Session(graph=graph) as session:
                scores.append(session.run("final_result:0", {f"{input_layer}:0": pixels})[0])
    return np.stack(scores)


# A corpus of odd and broken image files ----------------------------------------------------

# Orientation 6: the camera stored the photo turned 90 degrees anticlockwise; a viewer
# turns it clockwise to show it upright.
ROTATED_90 = 6


def drawn(shape: str, seed: int, size: int = 160) -> Image.Image:
    """One photo of `shape`, the same for the same seed."""
    return draw_shape(shape, random.Random(f"{shape}-corpus-{seed}"), size=size)


def with_orientation(
    upright: Image.Image, orientation: int = ROTATED_90
) -> tuple[Image.Image, bytes]:
    """The pixels a camera stores for `upright` under EXIF `orientation`, and that EXIF."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # undone by ROTATE_270 (orientation 6)
    return stored, exif.tobytes()


def encode_formats(shape: str, seed: int, size: int = 160) -> dict[str, tuple[str, bytes]]:
    """A drawn `shape` in every format and mode the decoder must read: {case: (ext, bytes)}."""
    photo = drawn(shape, seed, size)
    other = drawn("square" if shape == "circle" else "circle", seed, size)
    grey16 = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    stored, exif = with_orientation(photo)
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    half_transparent = photo.convert("RGBA")
    half_transparent.putalpha(Image.new("L", photo.size, 200))
    cases = {
        "jpeg": ("jpg", photo, {"quality": 90}),
        "jpeg progressive": ("jpg", photo, {"quality": 90, "progressive": True}),
        "jpeg cmyk": ("jpg", photo.convert("CMYK"), {"quality": 90}),
        "jpeg grey": ("jpeg", photo.convert("L"), {"quality": 90}),
        "jpeg exif rotated": ("jpg", stored, {"quality": 90, "exif": exif}),
        "png": ("png", photo, {}),
        "png 16-bit grey": ("png", Image.fromarray(grey16), {}),
        "png grey": ("png", photo.convert("L"), {}),
        "png grey+alpha": ("png", photo.convert("LA"), {}),
        "png palette transparency": ("png", palette, {"transparency": 0}),
        "png rgba": ("png", half_transparent, {}),
        "png exif rotated": ("png", stored, {"exif": exif}),
        "gif animated": ("gif", photo, {"save_all": True, "append_images": [other] * 2}),
        "webp": ("webp", photo, {"quality": 90}),
        "bmp": ("bmp", photo, {}),
        "tiff": ("tif", photo, {"compression": "tiff_lzw"}),
        "tiff 16-bit grey": ("tiff", Image.fromarray(grey16), {}),
        "heic": ("heic", photo, {"quality": 90}),
    }
    encoded = {}
    for case, (extension, image, options) in cases.items():
        stream = io.BytesIO()
        image.save(stream, format=Image.registered_extensions()[f".{extension}"], **options)
        encoded[case] = (extension, stream.getvalue())
    return encoded


def write_formats(folder: Path, shape: str, seed: int) -> dict[str, Path]:
    """Save a drawn `shape` in every format into `folder`: {case: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for case, (extension, data) in encode_formats(shape, seed).items():
        paths[case] = folder / f"{shape} {seed} {case}.{extension}"
        paths[case].write_bytes(data)
    return paths


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares `width` x `height` pixels: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + chunk(b"IEND", b"")
    )


def write_broken(folder: Path, seed: int = 0) -> dict[str, tuple[Path, str]]:
    """Files that must be skipped: {case: (path, words the reason must contain)}."""
    folder.mkdir(parents=True, exist_ok=True)
    whole = folder / f".whole-{seed}.jpg"
    drawn("circle", seed).save(whole, quality=90)
    data = whole.read_bytes()
    whole.unlink()
    rng = random.Random(seed)
    files = {
        "truncated jpeg": ("cut short.jpg", data[: len(data) // 2], "truncated"),
        "random bytes": ("noise.jpg", bytes(rng.randrange(256) for _ in range(5000)), "not an"),
        "empty": ("empty.jpg", b"", "empty file"),
        "text named .jpg": ("notes.jpg", b"shopping list: milk, eggs\n", "not an image"),
        "decompression bomb": ("bomb.png", png_declaring(20000, 20000), "decompression bomb"),
    }
    written = {}
    for case, (name, content, reason) in files.items():
        path = folder / name
        path.write_bytes(content)
        written[case] = (path, reason)
    return written


class InProcess:
    """What a Ray worker gets from the object store (`cluster.connection.Shared`), without Ray."""

    def __init__(self, value) -> None:
        self.value = value

    def get(self):
        return self.value


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
NO_BROWSER = "chromium and chromium-driver are not installed (apt-get install chromium-driver)"


@contextmanager
def headless_chromium(profile: Path, width: int = 1100, height: int = 800):
    """A Selenium driver of headless Chromium with a profile of its own, quit at the end."""
    pytest.importorskip("selenium", reason="the test extra is not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
