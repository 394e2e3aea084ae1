"""Training options: presets, distortions, smoothing, class weights, fine-tuning, summaries."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tensorflow as tf

from helpers import (
    colour_photos,
    draw_photos,
    in_process,
    label_image_2016,
    save_colour_features_model,
    tensorguess,
)
from tensorguess.training.augment import distort, pixel_seeds
from tensorguess.training.head import SplitData, label_weights, train_head
from tensorguess.training.options import DistortionOptions, HeadOptions
from tensorguess.training.presets import PRESETS, preset_options


def _blobs(counts, spread, seed=0):
    """Two overlapping Gaussian blobs in 8 dimensions, `counts` points each."""
    rng = np.random.default_rng(seed)
    features = np.concatenate(
        [
            rng.normal(centre, spread, size=(count, 8))
            for centre, count in ((0, counts[0]), (1, counts[1]))
        ]
    )
    labels = np.repeat([0, 1], counts)
    return SplitData(features.astype(np.float32), labels)


def _recall(head, split, label):
    guesses = head.probabilities(split.features).argmax(axis=1)
    return (guesses[split.labels == label] == label).mean()


def test_balanced_class_weights_find_more_of_a_rare_label():
    train, validation = _blobs((900, 60), 1.2, seed=1), _blobs((300, 20), 1.2, seed=2)
    test = _blobs((300, 100), 1.2, seed=3)
    quiet = dict(epochs=40, label_smoothing=0.0)
    plain = HeadOptions(class_weights="none", **quiet)
    balanced = HeadOptions(class_weights="balanced", **quiet)
    plain = train_head(train, validation, test, 2, plain, say=lambda _: None)
    balanced = train_head(train, validation, test, 2, balanced, say=lambda _: None)
    assert _recall(balanced, test, 1) > _recall(plain, test, 1) + 0.2


def test_balanced_weights_give_every_label_the_same_total():
    labels = np.array([0] * 30 + [1] * 10 + [2] * 5)
    weights = label_weights(labels, 3, balance=True)
    totals = [weights[label] * (labels == label).sum() for label in range(3)]
    np.testing.assert_allclose(totals, totals[0])
    np.testing.assert_array_equal(label_weights(labels, 3, balance=False), [1, 1, 1])


def test_label_smoothing_keeps_scores_off_certainty():
    data = _blobs((200, 200), 0.05)
    fast = dict(epochs=100, learning_rate=0.05, class_weights="none")
    confident = HeadOptions(label_smoothing=0.0, **fast)
    confident = train_head(data, data, data, 2, confident, say=lambda _: None)
    smoothed = HeadOptions(label_smoothing=0.2, **fast)
    smoothed = train_head(data, data, data, 2, smoothed, say=lambda _: None)
    # Smoothing 0.2 over two labels makes 0.9 the best score a photo can be given.
    assert confident.probabilities(data.features).max() > 0.99
    assert smoothed.probabilities(data.features).max() < 0.95
    assert smoothed.test_accuracy == 1.0


def test_a_distorted_view_is_reproducible_and_views_differ():
    rng = np.random.default_rng(0)
    pixels = tf.constant(rng.uniform(0, 255, size=(2, 64, 64, 3)).astype(np.float32))
    settings = DistortionOptions(2, flip_left_right=True, random_crop=10, random_scale=20)
    first = distort(pixels, pixel_seeds(pixels, 1), settings, 64).numpy()
    again = distort(pixels, pixel_seeds(pixels, 1), settings, 64).numpy()
    other = distort(pixels, pixel_seeds(pixels, 2), settings, 64).numpy()
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).mean() > 1
    assert first.shape == (2, 64, 64, 3) and first.min() >= 0 and first.max() <= 255


def test_flip_alone_mirrors_or_keeps_the_photo():
    rng = np.random.default_rng(1)
    pixels = tf.constant(rng.uniform(0, 255, size=(16, 32, 32, 3)).astype(np.float32))
    flip_only = DistortionOptions(views=1, flip_left_right=True)
    before = pixels.numpy()
    after = distort(pixels, pixel_seeds(pixels, 1), flip_only, 32).numpy()
    mirrored = np.isclose(after, before[:, :, ::-1], atol=1e-3).all(axis=(1, 2, 3))
    kept = np.isclose(after, before, atol=1e-3).all(axis=(1, 2, 3))
    assert (mirrored | kept).all() and mirrored.any() and kept.any()


def test_presets_and_flags():
    assert preset_options("balanced") == preset_options()
    assert preset_options().fine_tune.enabled and not preset_options("fast").fine_tune.enabled
    tuned = preset_options().fine_tune
    assert (tuned.blocks, tuned.epochs) == (6, 6)  # README's preset table: 6 blocks, 6 epochs
    best = preset_options("best", fine_tune_epochs=1)
    assert best.fine_tune.blocks > preset_options().fine_tune.blocks
    assert best.fine_tune.epochs == 1 and best.preset == "best"
    assert best.fine_tune.augment == "trivial" and preset_options().fine_tune.augment == "none"
    assert best.image_size == 300 and preset_options().image_size is None  # Lite2's own 260
    # Fine-tuning on the validation photos too lifted balanced; best gained nothing from it.
    assert preset_options().fine_tune.on_validation and not best.fine_tune.on_validation
    # A hub model keeps its own input size and is not fine-tuned, unless told otherwise.
    hub = preset_options("best", backbone="hub:/models/x")
    assert hub.image_size is None and not hub.fine_tune.enabled and hub.flip_average
    assert preset_options("best", backbone="hub:/models/x", image_size=192).image_size == 192
    assert set(PRESETS) == {"fast", "balanced", "best"}
    help_text = tensorguess("train", "--help").stdout
    assert "--preset {fast,balanced,best}" in help_text
    # What makes a preset slow is said where a user chooses it.
    flat = " ".join(help_text.split())
    assert "cannot serve: about 4 and a half minutes for 3,000 photos" in flat


def test_fast_preset_caches_distorted_views_and_writes_tensorboard_summaries(
    trained_copy, tmp_path
):
    summaries = tmp_path / "summaries"
    flags = "--preset fast --flip_left_right --random_crop 10 --distorted_views 2".split()
    flags += ["--testing_percentage", "20", "--no_report"]  # the report is test_report's
    first = in_process("train", trained_copy, *flags, "--summaries_dir", summaries, "--json")
    assert "Fine-tun" not in first.stderr
    computed = re.search(r"^Distorted views: (\d+) computed, 0 from cache", first.stderr, re.M)
    assert computed and int(computed.group(1)) > 0, first.stderr
    epochs = json.loads(first.stdout)["epochs_run"]
    for split in ("train", "validation"):
        (events,) = (summaries / split).glob("events.out.tfevents.*")
        steps: dict[str, list[int]] = {}
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                steps.setdefault(value.tag, []).append(event.step)
        every_epoch = list(range(1, epochs + 1))
        assert steps == {"cross_entropy": every_epoch, "accuracy": every_epoch}

    again = in_process("train", trained_copy, *flags)
    assert re.search(
        rf"^Distorted views: 0 computed, {computed.group(1)} from cache", again.stdout, re.M
    )


def test_fine_tune_says_it_is_uncached_and_keeps_the_2016_contract(trained_copy, tmp_path):
    result = in_process(
        "train",
        trained_copy,
        "--preset",
        "fast",
        "--fine_tune",
        "--fine_tune_blocks",
        "1",
        "--fine_tune_epochs",
        "1",
        "--flip_left_right",
        "--random_brightness",
        "10",
        "--distorted_views",
        "0",
        "--testing_percentage",
        "20",
        "--no_report",
    )
    flat = " ".join(result.stdout.split())
    assert "feature cache cannot help" in flat and "Fine-tune epoch 1:" in flat
    assert re.search(r"^Final test accuracy = [\d.]+% \(N=\d+\)$", result.stdout, re.M)
    assert json.loads((trained_copy / "tensorguess.json").read_text())["fine_tuned_blocks"] == 1
    (photo,) = draw_photos(tmp_path, "square", 1, seed=31)
    labels, predictions = label_image_2016(
        trained_copy / "retrained_graph.pb", trained_copy / "retrained_labels.txt", photo
    )
    assert predictions.shape == (1, 2) and labels[int(np.argmax(predictions[0]))] == "square"


@pytest.mark.parametrize(
    "flag",
    ["--dropout=1", "--label_smoothing=-0.1", "--random_crop=101", "--fine_tune_augment=rand"],
)
def test_out_of_range_options_are_usage_errors(tmp_path, flag):
    result = tensorguess("train", tmp_path, flag, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_fine_tune_of_a_hub_backbone_is_refused_before_any_work(tmp_path):
    model_dir = save_colour_features_model(tmp_path / "feature_vector")
    colour_photos(tmp_path / "tf_files" / "data" / "red", (220, 30, 30), 4, 1)
    colour_photos(tmp_path / "tf_files" / "data" / "blue", (30, 30, 220), 4, 2)
    result = in_process(
        "train", tmp_path / "tf_files", "--backbone", f"hub:{model_dir}", "--fine_tune", check=False
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "efficientnet_lite backbones only" in result.stderr
    assert "Features:" not in result.stdout


def test_distorted_views_are_computed_by_the_engine_asked_for(trained_copy):
    from tensorguess.features.engines import engine_precision, resolved_engine

    if engine_precision(resolved_engine("openvino")) == "f32":
        pytest.skip("OpenVINO computes in float32 on this CPU: nothing to mix up")
    in_process(
        "train",
        trained_copy,
        *"--preset fast --flip_left_right --distorted_views 1 --engine tensorflow".split(),
        "--testing_percentage",
        "20",
        "--no_report",
    )
    cache = trained_copy / "bottlenecks"
    views = [path.relative_to(cache) for path in cache.rglob("distorted-*") if path.is_dir()]
    # float32 (TensorFlow) views only, beside float32 plain features: no bfloat16 in this run.
    assert views and not [view for view in views if "bf16" in str(view)], views


@pytest.mark.parametrize("on_validation", [True, False])
def test_fine_tuning_learns_from_the_validation_photos_unless_told_not_to(tmp_path, on_validation):
    """By default fine-tuning learns from the validation photos too (the test photos never):
    a label only the validation photos have is learnt; with --no-fine_tune_on_validation it
    is not, and the epochs are judged on them again."""
    from tensorguess.features.backbones import get_backbone
    from tensorguess.training.fine_tune import LabelledPaths, fine_tune
    from tensorguess.training.options import FineTuneOptions

    backbone = get_backbone("efficientnet_lite0", 96)
    shapes = {
        shape: draw_photos(tmp_path / shape, shape, 8, seed=81)
        for shape in ("circle", "square", "triangle")
    }

    def split(*named: tuple[str, int]) -> LabelledPaths:
        paths = [path for shape, _ in named for path in shapes[shape]]
        return LabelledPaths(paths, np.repeat([label for _, label in named], 8))

    train, validation = split(("circle", 0), ("square", 1)), split(("triangle", 2))
    test = LabelledPaths(shapes["triangle"], np.full(8, 2))  # to read the scores of
    head_options = HeadOptions(epochs=1)  # on blank features: it starts with no opinion
    head = train_head(
        *(
            SplitData(np.zeros((n, 1280), np.float32), s.labels)
            for n, s in ((16, train), (8, validation), (8, test))
        ),
        3,
        head_options,
        say=lambda _: None,
    )
    lines: list[str] = []
    tuned = fine_tune(
        backbone,
        head,
        head_options,
        train,
        validation,
        test,
        DistortionOptions(),
        FineTuneOptions(
            blocks=2, epochs=8, learning_rate=0.002, on_validation=on_validation, batch_size=8
        ),
        say=lines.append,
    )
    triangle = tuned.test_scores[:, 2].mean()
    epochs = [line for line in lines if line.startswith("Fine-tune epoch")]
    assert len(epochs) == 8
    if on_validation:
        assert "16 training and 8 validation photos together" in lines[0]
        assert triangle > 0.6 and not any("validation" in line for line in epochs)
    else:
        assert "validation" not in lines[0]
        # Never taught triangles, it keeps its start, which gives each label about a third.
        assert triangle < 0.4 and all("validation accuracy" in line for line in epochs)
