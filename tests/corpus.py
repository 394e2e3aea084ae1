"""A corpus of odd and broken image files, drawn by the tests themselves.

`write_formats` saves one drawn shape in every format and mode a photo folder may
hold; `write_broken` writes the files that must be skipped with a reason.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image
from pillow_heif import register_heif_opener

from tensorguess.sample_data import draw_shape

register_heif_opener()  # to write the HEIC case

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
