"""The pictures a training run leaves: PNG figures and a self-contained report.html."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from helpers import LABELS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _is_a_picture(image: Image.Image) -> bool:
    """Not blank: a fair share of the pixels differ from the background, in several tones."""
    pixels = np.asarray(image.convert("L"), dtype=np.int16)
    background = np.bincount(pixels.ravel()).argmax()
    drawn = np.abs(pixels - background) > 40
    return drawn.mean() > 0.01 and len(np.unique(pixels)) > 16


def test_training_writes_readable_figures(trained):
    tf_files, result = trained
    for name, smallest in (
        ("training_curves.png", (800, 300)),
        ("confusion_matrix.png", (400, 400)),
    ):
        with Image.open(tf_files / name) as figure:
            assert figure.format == "PNG"
            assert figure.width >= smallest[0] and figure.height >= smallest[1]
            assert _is_a_picture(figure)
    assert "report.html" in result.stdout


def test_report_is_one_self_contained_page(trained):
    tf_files, _ = trained
    page = (tf_files / "report.html").read_text()
    # Everything inline: no file or network reference a copied page would lose.
    assert not re.search(r'src="(?!data:)', page)
    figures = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(figures) == 2
    assert base64.b64decode(figures[0]) == (tf_files / "training_curves.png").read_bytes()
    for label in LABELS:
        assert re.search(rf"<tr><td>{label}</td>(<td>[\d.]+</td>){{4}}</tr>", page)
    assert "efficientnet_lite0 at 224 px" in page
    # The settings in words: the preset by name, and only what this preset used.
    assert "<dt>preset</dt><dd>fast</dd>" in page
    assert "<dt>fine-tuning</dt><dd>off</dd>" in page
    assert "fine_tune_blocks" not in page and "=None" not in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(trained, tmp_path):
    tf_files, _ = trained
    screenshot = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--hide-scrollbars",
            "--window-size=1200,1800",
            f"--screenshot={screenshot}",
            (tf_files / "report.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with Image.open(screenshot) as image:
        assert image.size == (1200, 1800)
        assert _is_a_picture(image)
        # The figures are drawn: the curves' blue and orange lines are on the page.
        rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    blue = (np.abs(rgb - (31, 119, 180)).sum(axis=2) < 40).sum()
    orange = (np.abs(rgb - (255, 127, 14)).sum(axis=2) < 40).sum()
    assert blue > 200 and orange > 200
