"""The settings tree: one table of train flags, checked the same way for every caller."""

from __future__ import annotations

import re

import pytest

from helpers import tensorguess
from tensorguess.errors import InvalidOption, TensorguessError
from tensorguess.training.options import FLAGS, HeadOptions, TrainingOptions, options_from_flags
from tensorguess.training.presets import PRESETS, preset_options


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: preset_options(learning_rate_schedule="Cosine"), "one of constant, cosine"),
        (lambda: HeadOptions(dropout=1.0), "--dropout must be at least 0 and under 1"),
        (lambda: TrainingOptions(seed=-1), "--seed must be at least 0"),
        (lambda: options_from_flags(fine_tune_blocks=0), "--fine_tune_blocks must be at least 1"),
        (lambda: options_from_flags(epochs=2.5), "--epochs must be a whole number"),
        (lambda: preset_options(learning_rate=float("nan")), "finite"),
        (lambda: preset_options(validation_percentage=60, testing_percentage=40), "under 100"),
        (lambda: preset_options("turbo"), "--preset must be one of fast, balanced, best"),
    ],
)
def test_a_library_caller_gets_the_same_checks_as_the_command_line(build, words):
    with pytest.raises(InvalidOption, match=re.escape(words)):
        build()
    assert issubclass(InvalidOption, TensorguessError) and issubclass(InvalidOption, ValueError)


def test_presets_name_only_flags_and_the_defaults_are_balanced():
    for preset, values in PRESETS.items():
        assert set(values) <= set(FLAGS), preset
        assert preset_options(preset).preset == preset
    assert preset_options("balanced") == options_from_flags(preset="balanced")
    fast = preset_options("fast")
    assert not fast.fine_tune.enabled and fast.head.label_smoothing == 0
    assert dict(preset_options().describe())["fine-tuning"].startswith("top 6 blocks")
    assert dict(fast.describe())["fine-tuning"] == "off"
    mixed = dict(options_from_flags(fine_tune_mixup=0.2, flip_left_right=True).describe())
    assert mixed["fine-tuning"].endswith(
        "distorted (flip), mixup 0.2, on the validation photos too"
    ), mixed
    apart = options_from_flags(fine_tune_on_validation=False)
    assert dict(apart.describe())["fine-tuning"].endswith("(cosine)")
    assert "validation" not in dict(preset_options().describe("sigmoid"))["fine-tuning"]


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--validation_percentage", "150"], "must be at least 0 and under 100, got 150"),
        (["--validation_percentage", "60", "--testing_percentage", "40"], "stay under 100"),
        (["--learning_rate_schedule", "Cosine"], "invalid choice: 'Cosine'"),
        (["--dropout=1"], "must be at least 0 and under 1"),
        (["--epochs", "two"], "invalid int value: 'two'"),
        (["--fine_tune_mixup", "-0.2"], "must be at least 0, got -0.2"),
        # Abbreviations are refused: the Docker wrapper could not see that they name paths.
        (["--bottleneck", "cache"], "unrecognized arguments: --bottleneck"),
        (["--epoch", "5"], "unrecognized arguments: --epoch"),
    ],
)
def test_every_bad_setting_is_a_usage_error(tmp_path, flags, words):
    result = tensorguess("train", tmp_path, *flags, check=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("usage: tensorguess train")
    assert words in result.stderr.splitlines()[-1]


def test_every_flag_of_the_table_is_on_the_command_line_with_its_defaults():
    help_text = " ".join(tensorguess("train", "--help").stdout.split())
    for name in FLAGS:
        assert f"--{name}" in help_text, name
    assert (
        "--label_smoothing LABEL_SMOOTHING spread this share of each target over the others "
        "(preset fast: 0.0, balanced: 0.1, best: 0.1)" in help_text
    )
    assert "--learning_rate LEARNING_RATE Adam's learning rate (default 0.005)" in help_text
    assert "(preset fast: default, balanced: default, best: 300)" in help_text  # --image_size
