"""Decoding: any image Pillow reads becomes an RGB square of the backbone's size.

The same rules serve training and prediction, so a photo looks the same to the
classifier in both: EXIF orientation applied, transparency flattened onto white,
then a squash to a square (as retrain.py did) with Pillow's antialiased bilinear.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Large photos (a 12000x12000 scan) are fine; only Pillow's hard limit, a
# DecompressionBombError at about 179 megapixels, refuses a file.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)
TOO_MANY_PIXELS = "too many pixels (refused as a possible decompression bomb)"


class UnreadableImage(Exception):
    """An image file that cannot be decoded; the message is the reason shown to the user."""


def image_problem(path: Path) -> str | None:
    """Why Pillow cannot read the file's header, or None when it can (cheap: no decoding)."""
    try:
        with Image.open(path):
            return None
    except UnidentifiedImageError:
        return "not an image Pillow can read"
    except Image.DecompressionBombError:
        return TOO_MANY_PIXELS
    except (OSError, ValueError, SyntaxError) as error:
        return f"cannot open ({error})"


Size = int | tuple[int, int]


def _height_width(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def load_pixels(path: Path | str, size: Size) -> np.ndarray:
    """Decode `path` into uint8 RGB pixels of shape [height, width, 3] (`size` or (h, w))."""
    height, width = _height_width(size)
    try:
        with Image.open(path) as image:
            # Decode a large JPEG at a reduced DCT scale (never below `size`): much faster.
            image.draft("RGB", (max(height, width),) * 2)  # orientation may swap axes
            image = ImageOps.exif_transpose(image)
            image = _to_rgb(image)
            image = image.resize((width, height), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise UnreadableImage("file not found") from None
    except UnidentifiedImageError:
        raise UnreadableImage("not an image Pillow can read") from None
    except Image.DecompressionBombError:
        raise UnreadableImage(TOO_MANY_PIXELS) from None
    except (OSError, ValueError, SyntaxError) as error:
        raise UnreadableImage(f"cannot decode ({error})") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "I;16" or image.mode.startswith("I;16"):
        # 16-bit greyscale: keep the top 8 bits rather than clipping at 255.
        wide = np.asarray(image, dtype=np.uint16) >> 8
        return Image.fromarray(wide.astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def pixel_batches(paths: Sequence[Path | str], size: Size, batch_size: int):
    """A `tf.data.Dataset` of (pixels uint8 [B, h, w, 3], reasons string [B]) in order.

    Decoding runs in parallel; a file that fails gives black pixels and a non-empty
    reason, so one bad photo never stops a batch.
    """
    import tensorflow as tf

    names = [str(path) for path in paths]
    height, width = _height_width(size)

    def decode(index: np.ndarray):
        try:
            return load_pixels(names[int(index)], size), b""
        except UnreadableImage as problem:
            return np.zeros((height, width, 3), np.uint8), str(problem).encode()

    def decode_in_graph(index):
        pixels, reason = tf.numpy_function(decode, [index], [tf.uint8, tf.string], stateful=False)
        pixels.set_shape((height, width, 3))
        reason.set_shape(())
        return pixels, reason

    dataset = tf.data.Dataset.range(len(names))
    dataset = dataset.map(decode_in_graph, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(2)
