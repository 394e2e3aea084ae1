"""Heat maps (guess --explain): where the model found its evidence, checked on photos whose only
evidence is an object the test drew, at a spot the test knows."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from helpers import CHROMEDRIVER, CHROMIUM, NO_BROWSER, headless_chromium, in_process

SIZE = 192
OBJECT = "circle"
NO_OBJECT = "clutter"


def clutter_photo(rng: random.Random, with_object: bool) -> tuple[Image.Image, tuple]:
    """Noise and 40 coloured bars and lines; with `with_object`, a dark disc in a box of a
    third of the side (a ninth of the photo) at a random spot. Returns the photo and the box
    (left, top, right, bottom)."""
    noise = np.random.default_rng(rng.getrandbits(64)).normal(140, 30, (SIZE, SIZE, 3))
    image = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = rng.uniform(0, SIZE), rng.uniform(0, SIZE)
        width, height = rng.uniform(4, SIZE / 6), rng.uniform(4, SIZE / 6)
        colour = tuple(rng.randrange(0, 256) for _ in range(3))
        if rng.random() < 0.5:
            draw.rectangle([x, y, x + width, y + height], fill=colour)
        else:
            draw.line([x, y, x + width, y + height], fill=colour, width=rng.randrange(1, 5))
    side = SIZE / 3
    left, top = rng.uniform(0, SIZE - side), rng.uniform(0, SIZE - side)
    if with_object:
        middle_x, middle_y, radius = left + side / 2, top + side / 2, side * 0.45
        disc = [middle_x - radius, middle_y - radius, middle_x + radius, middle_y + radius]
        draw.ellipse(disc, fill=(20, 20, 20), outline=(250, 250, 250), width=3)
    return image, (left, top, left + side, top + side)


@dataclass
class Evidence:
    tf_files: Path
    photos: list[Path]
    boxes: dict[str, tuple]


@pytest.fixture(scope="module")
def evidence(tmp_path_factory) -> Evidence:
    """A model told apart photos with the disc from photos without it (`--preset fast`), and
    ten new photos with the disc."""
    root = tmp_path_factory.mktemp("evidence")
    rng = random.Random(5)
    for label, with_object in ((OBJECT, True), (NO_OBJECT, False)):
        (root / "tf_files" / "data" / label).mkdir(parents=True)
        for number in range(30):
            image, _ = clutter_photo(rng, with_object)
            image.save(root / "tf_files" / "data" / label / f"{number:03d}.jpg", quality=92)
    (root / "photos").mkdir()
    photos, boxes = [], {}
    for number in range(10):
        image, box = clutter_photo(rng, True)
        path = root / "photos" / f"photo_{number}.jpg"
        image.save(path, quality=92)
        photos.append(path)
        boxes[str(path)] = box
    in_process("train", root / "tf_files", "--preset", "fast", "--no_report")
    return Evidence(root / "tf_files", photos, boxes)


def _explained(tf_files: Path, photos: list[Path], folder: Path, *flags: str) -> list[dict]:
    result = in_process("guess", tf_files, *photos, "--explain", folder, "--json", *flags)
    return json.loads(result.stdout)


def _share_in_box(answer: dict, box: tuple) -> float:
    values = np.asarray(Image.open(answer["heatmap"]), np.float64)
    left, top, right, bottom = (round(edge) for edge in box)
    return values[top:bottom, left:right].sum() / max(values.sum(), 1e-9)


@pytest.fixture(scope="module")
def maps(evidence, tmp_path_factory) -> list[dict]:
    """guess --explain's answers for the ten photos with the disc, each for its best label."""
    return _explained(evidence.tf_files, evidence.photos, tmp_path_factory.mktemp("heat"))


def test_the_map_puts_most_of_its_mass_on_the_drawn_object(evidence, maps):
    answers = maps
    assert all(answer["predictions"][0]["label"] == OBJECT for answer in answers)
    shares = [_share_in_box(answer, evidence.boxes[answer["image"]]) for answer in answers]
    # The box is a ninth of the photo: a map spread evenly would put 11% in it.
    assert sum(share >= 0.5 for share in shares) >= 9, shares


def test_a_map_of_random_head_weights_is_another_map(evidence, maps, tmp_path):
    """Adebayo et al.'s sanity check: with the head's weights drawn at random, the map must
    change; a method that drew the photo's edges whatever the model would not."""
    import tensorflow as tf

    randomised = Path(shutil.copytree(evidence.tf_files, tmp_path / "randomised"))
    graph_path = randomised / "retrained_graph.pb"
    graph_def = tf.compat.v1.GraphDef.FromString(graph_path.read_bytes())
    nodes = {node.name: node for node in graph_def.node}

    def source(name: str):
        node = nodes[name.split(":")[0]]
        return source(node.input[0]) if node.op == "Identity" else node

    # The head: the matrix that multiplies the pooled features (Mean), frozen into a constant.
    kernels = {
        source(node.input[1]).name
        for node in graph_def.node
        if node.op == "MatMul" and source(node.input[0]).op == "Mean"
    }
    assert len(kernels) == 1 and all(nodes[name].op == "Const" for name in kernels)
    rng = np.random.default_rng(0)
    for name in kernels:
        value = tf.make_ndarray(nodes[name].attr["value"].tensor)
        drawn = rng.normal(0, value.std(), value.shape).astype(value.dtype)
        nodes[name].attr["value"].tensor.CopyFrom(tf.make_tensor_proto(drawn))
    graph_path.write_bytes(graph_def.SerializeToString())
    # The trained model's maps are of its best label, the disc on every photo (checked above).
    assert all(answer["predictions"][0]["label"] == OBJECT for answer in maps)
    label = ["--explain_label", OBJECT]
    random_head = _explained(randomised, evidence.photos, tmp_path / "random", *label)
    correlations = []
    for mine, theirs in zip(maps, random_head, strict=True):
        first, second = (
            np.asarray(Image.open(a["heatmap"]), float).ravel() for a in (mine, theirs)
        )
        correlations.append(np.corrcoef(first, second)[0, 1] if second.std() > 0 else 0.0)
    assert np.median(correlations) < 0.5, correlations


def test_guess_explain_writes_the_overlay_and_the_map_at_the_photos_size(evidence, tmp_path):
    # A wide photo (the model sees it squashed) and a second photo of the same name.
    wide = tmp_path / "wide" / "photo_0.jpg"
    wide.parent.mkdir()
    Image.open(evidence.photos[0]).resize((300, 150)).save(wide, quality=92)
    folder = tmp_path / "heat"
    result = in_process("guess", evidence.tf_files, evidence.photos[0], wide, "--explain", folder)
    overlay, second_overlay = (folder / "photo_0-heat.jpg", folder / "photo_0-2-heat.jpg")
    assert f"(heat map of {OBJECT}: {overlay})" in result.stdout.splitlines()
    assert f"(heat map of {OBJECT}: {second_overlay})" in result.stdout.splitlines()
    assert Image.open(folder / "photo_0-heat-map.png").size == (SIZE, SIZE)
    assert Image.open(folder / "photo_0-heat-map.png").mode == "L"
    assert Image.open(folder / "photo_0-2-heat-map.png").size == (300, 150)
    assert Image.open(second_overlay).size == (300, 150)
    # The overlay is the photo with colour over it, not the photo, nor the map alone.
    photo = np.asarray(Image.open(evidence.photos[0]).convert("RGB"), float)
    painted = np.asarray(Image.open(overlay).convert("RGB"), float)
    assert 5 < np.abs(painted - photo).mean() < 80


def test_another_label_is_explained_when_asked_and_an_unknown_one_refused(evidence, tmp_path):
    (answer,) = _explained(
        evidence.tf_files, evidence.photos[:1], tmp_path, "--explain_label", NO_OBJECT
    )
    assert answer["heatmap_label"] == NO_OBJECT
    assert Path(answer["heatmap"]).is_file() and Path(answer["heatmap_overlay"]).is_file()
    refused = in_process(
        "guess", evidence.tf_files, evidence.photos[0], "--explain", tmp_path / "x",
        "--explain_label", "dog", check=False,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "--explain_label 'dog': not a label of this model (circle, clutter)" in refused.stderr
    assert not (tmp_path / "x").exists()
    alone = in_process(
        "guess", evidence.tf_files, evidence.photos[0], "--explain_label", OBJECT, check=False
    )
    assert alone.returncode == 2 and "--explain_label goes with --explain DIR" in alone.stderr


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason=NO_BROWSER)
def test_guess_and_guessdir_without_explain_load_neither_the_explainer_nor_tensorflow(
    evidence, tmp_path
):
    """Heat maps cost nothing unless asked for: a guess and a sort without --explain import
    neither quality.explain nor TensorFlow (once the backbone's converted model is cached)."""
    in_process("guess", evidence.tf_files, evidence.photos[0])  # the cache, filled once
    script = (
        "import sys\n"
        "from tensorguess.cli import main\n"
        f"code = main(['guess', {str(evidence.tf_files)!r}, {str(evidence.photos[0])!r}])\n"
        f"code += main(['sort', {str(evidence.tf_files)!r}, {str(evidence.photos[0].parent)!r},"
        f" {str(tmp_path / 'sorted')!r}])\n"
        "print('LOADED', code, 'tensorguess.quality.explain' in sys.modules,"
        " 'tensorflow' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.stdout.splitlines()[-1] == "LOADED 0 False False", result.stderr[-2000:]


def test_the_report_shows_each_mistakes_evidence_in_a_browser(evidence, tmp_path):
    """evaluate --report on photos labelled wrongly on purpose: beside each, the evidence
    for the guessed and for the true label, decoded and drawn by a real browser."""
    from selenium.webdriver.common.by import By

    labelled = tmp_path / "labelled"
    for label, photos in ((OBJECT, evidence.photos[:2]), (NO_OBJECT, evidence.photos[2:5])):
        (labelled / label).mkdir(parents=True)
        for photo in photos:
            shutil.copy(photo, labelled / label / photo.name)
    page = tmp_path / "checked.html"
    result = in_process("evaluate", evidence.tf_files, labelled, "--report", page)
    assert "Accuracy = 40.0% (N=5)" in result.stdout
    with headless_chromium(tmp_path / "profile", 1200, 1400) as driver:
        driver.get(page.as_uri())
        figures = driver.find_elements(By.CSS_SELECTOR, "figure.explained")
        assert len(figures) == 3
        for figure in figures:
            images = figure.find_elements(By.TAG_NAME, "img")
            titles = [image.get_attribute("title") for image in images[1:]]
            assert titles == [f"evidence for {OBJECT}", f"evidence for {NO_OBJECT}"]
            widths = [driver.execute_script("return arguments[0].naturalWidth", i) for i in images]
            assert all(width > 100 for width in widths)  # decoded, not a broken picture
        driver.save_screenshot(str(tmp_path / "report.png"))
        print(f"screenshot: {tmp_path / 'report.png'}")
