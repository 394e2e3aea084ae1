"""Decoding: any image Pillow reads becomes an RGB square of the backbone's size.

The same rules serve training and prediction, so a photo looks the same to the
classifier in both: the first frame of an animation, EXIF orientation applied,
16-bit samples cut to their top 8 bits, transparency flattened onto white, then a
squash to the requested size (as retrain.py did): area-averaged when shrinking,
bilinear when enlarging.

Whatever a file holds, `load_pixels` either returns pixels or raises `UnreadableImage`
with a one-line reason: damaged files make Pillow raise IndexError, NotImplementedError,
struct.error and more, and one exception escaping a decoding thread would end every
batch of `pixel_batches` after it.

Old tools' graphs get the pixels their own `label_image.py` made instead
(`label_image_pixels`): the whole decoded image, no EXIF turn, transparency dropped, then
TensorFlow 1's bilinear resize (no antialiasing, no half-pixel centres), so they answer as
they always did.

Memory stays bounded on huge photos: a JPEG is decoded at a reduced DCT scale
(`draft`, never below the requested size), every other format is shrunk by a whole
factor (`reduce`) before anything else copies it, and only one image over
`LARGE_IMAGE_PIXELS` is decoded at a time, however many decoders run in parallel.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from itertools import islice
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

try:  # HEIC/HEIF photos (iPhones): the opener registers itself with Pillow.
    from pillow_heif import register_heif_opener
except ImportError:  # pragma: no cover  (a dependency; only a broken install lacks it)
    register_heif_opener = None
if register_heif_opener is not None:
    register_heif_opener()

# The decompression-bomb guard. Pillow's own check runs on the size a file declares,
# before a JPEG's draft could shrink it, so a 400-megapixel JPEG that decodes at 1/8
# scale in 25 MB would be refused. We turn Pillow's check off and apply the same hard
# limit Pillow uses (twice its warning threshold, about 179 megapixels: 0.7 GB decoded
# at Pillow's 4 bytes a pixel) to the size that will really be decoded, after the draft.
MAX_PIXELS = 2 * 89_478_485
Image.MAX_IMAGE_PIXELS = None
# Pillow warns about damaged metadata ("Corrupt EXIF data") in files it still decodes;
# among a thousand photos those lines would bury the real messages.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
# Bump when decoding changes the pixels it gives: the feature cache is keyed by it.
DECODER_VERSION = 1
# Above this, an image is decoded alone (see the module docstring).
LARGE_IMAGE_PIXELS = 50_000_000
_LARGE_DECODE = threading.Lock()

# EXIF orientation -> the transpose that makes the photo upright (ImageOps.exif_transpose's).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = {5, 6, 7, 8}
NOT_AN_IMAGE = "not an image Pillow can read"


class UnreadableImage(Exception):
    """An image file that cannot be decoded; the message is the reason shown to the user."""


def image_problem(path: Path) -> str | None:
    """Why Pillow cannot read the file's header, or None when it can (cheap: no decoding)."""
    try:
        with Image.open(path):
            return None
    except UnidentifiedImageError:
        return _unidentified(path)
    except Exception as error:  # noqa: BLE001  (any failure of a damaged file is a reason)
        return f"cannot open: {_one_line(error)}"


Size = int | tuple[int, int]


def _height_width(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def load_pixels(path: Path | str | BinaryIO, size: Size) -> np.ndarray:
    """Decode `path` (or an open binary file) into uint8 RGB pixels of shape
    [height, width, 3] (`size` or (h, w)).

    Raises `UnreadableImage` and nothing else, whatever the file holds.
    """
    height, width = _height_width(size)

    def decode(image: Image.Image) -> np.ndarray:
        # Orientations 5-8 swap the axes, so the draft must keep both sides above the target.
        image.draft("RGB", (max(height, width),) * 2)
        return _decode_bounded(image, lambda loaded: _to_pixels(loaded, height, width))

    return _decode_file(path, decode)


def load_upright(path: Path | str | BinaryIO, longest: int | None = None) -> np.ndarray:
    """The photo as a person sees it: uint8 RGB [height, width, 3] at its own size (shrunk
    by a whole factor while decoding when its longest side is over `longest`), with
    `load_pixels`' rules (EXIF turn, transparency onto white). Raises `UnreadableImage`."""

    def decode(image: Image.Image) -> np.ndarray:
        if longest:
            image.draft("RGB", (longest, longest))
        return _decode_bounded(image, lambda loaded: _upright(loaded, longest))

    return _decode_file(path, decode)


def _upright(image: Image.Image, longest: int | None) -> np.ndarray:
    orientation = _orientation(image)
    image = _reducible(image)
    factor = max(image.size) // longest if longest else 1
    if factor >= 2:
        image = image.reduce(factor)
    if orientation in _UPRIGHT:
        image = image.transpose(_UPRIGHT[orientation])
    return np.asarray(_flatten(image), dtype=np.uint8)


def load_pixels_from_bytes(data: bytes, size: Size) -> np.ndarray:
    """`load_pixels` for an encoded image held in memory (an upload): the same decoder, no file."""
    if not data:
        raise UnreadableImage("empty file")
    return load_pixels(io.BytesIO(data), size)


def label_image_pixels(path: Path | str, size: Size) -> np.ndarray:
    """Float32 RGB [height, width, 3] as label_image.py (TensorFlow for Poets) made them.

    Its `read_tensor_from_image_file`: TensorFlow's decoder at full size (its JPEG default
    is libjpeg's fast integer IDCT, a few levels off Pillow's accurate one; no EXIF turn; a
    PNG's alpha dropped), then TensorFlow 1's `resize_bilinear`, which samples at
    `i * in / out` without antialiasing. Old graphs' scores depend on exactly that. Formats
    TensorFlow cannot read (WebP, TIFF, HEIC) are decoded by Pillow. Raises
    `UnreadableImage` and nothing else.
    """
    height, width = _height_width(size)

    def decode(image: Image.Image) -> np.ndarray:
        rgb = None
        if image.format in _TENSORFLOW_FORMATS:
            _refuse_bomb(image)
            rgb = _tensorflow_decoded(path)
        if rgb is None:  # another format, or one TensorFlow refuses: Pillow says why
            rgb = _decode_bounded(image, lambda whole: np.asarray(_reducible(whole).convert("RGB")))
        return legacy_bilinear(rgb.astype(np.float32), height, width)

    return _decode_file(path, decode)


_TENSORFLOW_FORMATS = {"JPEG", "MPO", "PNG", "GIF", "BMP"}


def _tensorflow_decoded(path: Path | str) -> np.ndarray | None:
    """uint8 RGB from TensorFlow's own decoder, or None when it refuses the file."""
    from tensorguess.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    import tensorflow as tf

    data = Path(path).read_bytes()  # any name Python can open, bytes that are not UTF-8 too
    try:
        return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    except tf.errors.OpError:
        return None


def legacy_bilinear(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """TensorFlow 1's `resize_bilinear` (align_corners=False): [h, w, C] -> [height, width, C]."""

    def axis(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scale = np.float32(size_in) / np.float32(size_out)
        position = np.arange(size_out, dtype=np.float32) * scale
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, size_in - 1)
        return low, high, (position - low).astype(np.float32)

    top, bottom, y_lerp = axis(pixels.shape[0], height)
    left, right, x_lerp = axis(pixels.shape[1], width)
    x_lerp = x_lerp[None, :, None]
    upper = pixels[top][:, left] + (pixels[top][:, right] - pixels[top][:, left]) * x_lerp
    lower = pixels[bottom][:, left] + (pixels[bottom][:, right] - pixels[bottom][:, left]) * x_lerp
    return upper + (lower - upper) * y_lerp[:, None, None]


def _decode_file(
    path: Path | str | BinaryIO, decode: Callable[[Image.Image], np.ndarray]
) -> np.ndarray:
    """`decode(opened image)`, with every failure turned into `UnreadableImage`."""
    try:
        with Image.open(path) as image:
            return decode(image)
    except UnreadableImage:
        raise
    except FileNotFoundError:
        raise UnreadableImage("file not found") from None
    except UnidentifiedImageError:
        raise UnreadableImage(_unidentified(path)) from None
    except MemoryError:
        raise UnreadableImage("not enough memory to decode it") from None
    except Exception as error:  # noqa: BLE001  (see the module docstring)
        raise UnreadableImage(f"cannot decode: {_one_line(error)}") from None


def _refuse_bomb(image: Image.Image) -> None:
    if image.size[0] * image.size[1] > MAX_PIXELS:
        raise UnreadableImage(
            f"{image.size[0]}x{image.size[1]} pixels, over the limit of "
            f"{MAX_PIXELS / 1e6:.0f} megapixels (refused as a possible decompression bomb)"
        )


def _decode_bounded(image: Image.Image, finish: Callable[[Image.Image], np.ndarray]):
    """Load the (drafted) image and `finish` it, refusing bombs and taking turns on huge ones."""
    _refuse_bomb(image)
    with _LARGE_DECODE if image.size[0] * image.size[1] > LARGE_IMAGE_PIXELS else nullcontext():
        image.load()
        return finish(image)


def _to_pixels(image: Image.Image, height: int, width: int) -> np.ndarray:
    orientation = _orientation(image)
    image = _reducible(image)
    # The target size as the file stores the photo, before it is turned upright.
    stored_width, stored_height = (height, width) if orientation in _SWAPS_AXES else (width, height)
    factor = min(image.size[0] // stored_width, image.size[1] // stored_height)
    if factor >= 2:
        image = image.reduce(factor)
    if orientation in _UPRIGHT:
        image = image.transpose(_UPRIGHT[orientation])
    image = _flatten(image)
    # Shrinking, a box filter averages every source pixel once, as bilinear's antialiasing
    # does, at 60% of its cost; enlarging, bilinear interpolates where a box would copy.
    shrinking = image.size[0] >= width and image.size[1] >= height
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    image = image.resize((width, height), resample)
    return np.asarray(image, dtype=np.uint8)


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # noqa: BLE001  (damaged EXIF: the pixels are still worth using)
        return 1


def _reducible(image: Image.Image) -> Image.Image:
    """The image in L, LA, RGB or RGBA: modes `reduce` and the flattening handle."""
    mode = image.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return image
    if mode.startswith("I;16") or mode == "I":
        # 16-bit greyscale: keep the top 8 bits rather than clipping at 255.
        wide = np.clip(np.asarray(image), 0, 65535).astype(np.uint16) >> 8
        return Image.fromarray(wide.astype(np.uint8), "L")
    if "A" in mode or "a" in mode or "transparency" in image.info:
        return image.convert("RGBA")
    if mode == "1":
        return image.convert("L")
    return image.convert("RGB")


def _flatten(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white."""
    if image.mode in ("RGBA", "LA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def _unidentified(path: Path | str | BinaryIO) -> str:
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
    except (OSError, TypeError):  # TypeError: an open file has no path to measure
        pass
    return NOT_AN_IMAGE


def _one_line(error: BaseException) -> str:
    """An exception as a short single line: a corrupt file can put anything in a message."""
    text = " ".join(str(error).split())
    # Pillow's own complaints read well alone; anything else needs its type to make sense.
    if not isinstance(error, OSError | ValueError | SyntaxError) or not text:
        text = f"{type(error).__name__}: {text}".rstrip(": ")
    return text[:200]


def pixel_batches(
    paths: Sequence[Path | str], size: Size, batch_size: int
) -> Iterator[tuple[np.ndarray, list[str]]]:
    """Yield (pixels uint8 [B, h, w, 3], reasons [B]) for `paths`, in order, batch by batch.

    Threads decode ahead (Pillow releases the GIL while it decodes and resizes), at most
    two batches ahead of the consumer, so decoding overlaps with whatever the consumer
    runs and memory stays bounded however many paths there are. A file that fails gives
    black pixels and a non-empty reason, so one bad photo never stops a batch.
    """
    height, width = _height_width(size)

    def decode(path: Path | str) -> tuple[np.ndarray, str]:
        try:
            return load_pixels(path, size), ""
        except UnreadableImage as problem:
            return np.zeros((height, width, 3), np.uint8), str(problem)

    remaining = iter(paths)
    # One thread per core: a third measured slower on 2 cores (docs/benchmarks.md).
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        pending = deque(pool.submit(decode, path) for path in islice(remaining, 2 * batch_size))
        batch: list[tuple[np.ndarray, str]] = []
        while pending:
            batch.append(pending.popleft().result())
            for path in islice(remaining, 1):
                pending.append(pool.submit(decode, path))
            if len(batch) == batch_size or not pending:
                yield np.stack([pixels for pixels, _ in batch]), [reason for _, reason in batch]
                batch = []
