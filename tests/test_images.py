"""Decoding: every format a photo folder holds, EXIF orientation, huge files, broken files."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers import drawn, with_orientation, write_broken, write_formats
from tensorguess.data.images import UnreadableImage, load_pixels, pixel_batches

SIZE = 224
GREY = {"jpeg grey", "png 16-bit grey", "png grey", "png grey+alpha", "tiff 16-bit grey"}


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    """The drawn circle in every format, and its decoded pixels as a lossless PNG."""
    paths = write_formats(tmp_path_factory.mktemp("formats"), "circle", 1)
    return paths, load_pixels(paths["png"], SIZE).astype(float)


def _grey(pixels: np.ndarray) -> np.ndarray:
    # ITU-R 601-2 luma, as Pillow's convert("L"); a grey photo comes back as three equal channels.
    luma = pixels @ np.array([0.299, 0.587, 0.114])
    return np.repeat(luma[..., None], 3, axis=2)


@pytest.mark.parametrize(
    "case",
    [
        "jpeg",
        "jpeg progressive",
        "jpeg cmyk",
        "jpeg grey",
        "png 16-bit grey",
        "png grey",
        "png grey+alpha",
        "png palette transparency",
        "png rgba",
        "gif animated",
        "webp",
        "bmp",
        "tiff",
        "tiff 16-bit grey",
        "heic",
    ],
)
def test_every_format_decodes_to_the_same_picture(formats, case):
    paths, reference = formats
    expected = _grey(reference) if case in GREY else reference
    if case == "png rgba":  # 200/255 opaque, flattened onto white
        expected = (reference * 200 + 255 * 55) / 255
    pixels = load_pixels(paths[case], SIZE)
    assert pixels.shape == (SIZE, SIZE, 3) and pixels.dtype == np.uint8
    assert np.abs(pixels - expected).mean() < 3, case


def test_an_animated_gif_gives_its_first_frame(formats, tmp_path):
    paths, reference = formats
    later_frames = drawn("square", 1)  # what write_formats appends after the circle
    later_frames.save(tmp_path / "square.png")
    pixels = load_pixels(paths["gif animated"], SIZE)
    assert np.abs(pixels - reference).mean() < 3
    assert np.abs(pixels - load_pixels(tmp_path / "square.png", SIZE)).mean() > 10


@pytest.mark.parametrize("case", ["png exif rotated", "jpeg exif rotated"])
def test_exif_orientation_is_applied(formats, case, tmp_path):
    paths, reference = formats
    pixels = load_pixels(paths[case], SIZE)
    exact = case.startswith("png")
    assert np.abs(pixels - reference).mean() < (0.01 if exact else 3)
    # The same file with its EXIF dropped shows the photo on its side: the test can tell.
    stored, _ = with_orientation(drawn("circle", 1))
    stored.save(tmp_path / "sideways.png")
    assert np.abs(load_pixels(tmp_path / "sideways.png", SIZE) - reference).mean() > 10


def test_orientation_and_size_apply_to_non_square_targets(tmp_path):
    upright = drawn("square", 2).resize((300, 200))
    stored, exif = with_orientation(upright)
    stored.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    upright.save(tmp_path / "upright.jpg", quality=95)
    pixels = load_pixels(tmp_path / "rotated.jpg", (60, 90))
    assert pixels.shape == (60, 90, 3)
    assert np.abs(pixels.astype(float) - load_pixels(tmp_path / "upright.jpg", (60, 90))).mean() < 3


@pytest.mark.parametrize(
    "case", ["truncated jpeg", "random bytes", "empty", "text named .jpg", "decompression bomb"]
)
def test_broken_files_are_refused_with_a_reason(tmp_path, case):
    path, words = write_broken(tmp_path)[case]
    with pytest.raises(UnreadableImage, match=words) as refused:
        load_pixels(path, SIZE)
    assert "\n" not in str(refused.value)


def test_one_bad_file_does_not_stop_a_batch(formats, tmp_path):
    paths, reference = formats
    broken = [path for path, _ in write_broken(tmp_path).values()]
    order = [paths["png"], *broken, paths["jpeg"], tmp_path / "missing.jpg"]
    batches = list(pixel_batches(order, SIZE, batch_size=3))
    pixels = np.concatenate([batch for batch, _ in batches])
    reasons = [reason for _, batch in batches for reason in batch]
    assert [bool(reason) for reason in reasons] == [False] + [True] * len(broken) + [False, True]
    assert reasons[-1] == "file not found"
    assert np.abs(pixels[0] - reference).mean() < 0.01
    assert np.abs(pixels[-2] - reference).mean() < 3


# Decoding a 12000x12000 photo in a fresh interpreter, measuring the peak resident memory
# it adds. A JPEG is decoded at 1/8 scale; other formats need their full pixels once.
_MEASURE = textwrap.dedent(
    """
    import resource, sys
    from tensorguess.data.images import load_pixels
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pixels = load_pixels(sys.argv[1], 224)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(pixels.shape, pixels.mean(), (after - before) // 1024)
    """
)
_DRAW_HUGE = textwrap.dedent(
    """
    import sys
    from PIL import Image, ImageDraw
    side = 12000
    small = Image.radial_gradient("L").resize((1000, 1000))
    image = Image.merge("RGB", [small, small.transpose(Image.Transpose.ROTATE_90), small])
    image = image.resize((side, side))
    ImageDraw.Draw(image).rectangle([2000, 2000, 9000, 9000], outline=(255, 0, 0), width=300)
    image.save(sys.argv[1] + "/huge.jpg", quality=85)
    image.save(sys.argv[1] + "/huge.png", compress_level=1)
    """
)


def test_huge_images_decode_in_bounded_memory(tmp_path):
    subprocess.run([sys.executable, "-c", _DRAW_HUGE, str(tmp_path)], check=True, timeout=300)
    # Megabytes: the JPEG needs next to nothing; a PNG its pixels once (4 bytes each, 576
    # MB), where decoding, then converting and resizing at full size took 1.6 GB.
    limits = {"huge.jpg": 100, "huge.png": 700}
    for name, limit in limits.items():
        result = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(tmp_path / name)],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        shape, mean, added = result.stdout.rsplit(" ", 2)
        assert shape == "(224, 224, 3)" and float(mean) > 20, result.stdout
        assert int(added) < limit, f"{name}: decoding added {added} MB"


def test_pixel_limit_applies_after_the_jpeg_draft(tmp_path):
    # A JPEG declaring 400 megapixels decodes at 1/8 scale (6 megapixels) in 25 MB, so
    # it is not refused; a PNG declaring as many is (test_broken_files_are_refused...).
    from PIL import Image

    declared = tmp_path / "declares 20000x20000.jpg"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(declared)
    data = bytearray(declared.read_bytes())
    marker = data.index(b"\xff\xc0")  # baseline frame header: height and width at +5
    data[marker + 5 : marker + 9] = (20000).to_bytes(2, "big") * 2
    declared.write_bytes(bytes(data))
    assert load_pixels(declared, SIZE).shape == (SIZE, SIZE, 3)
