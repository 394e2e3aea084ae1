"""Presets: named sets of training options, so that a user need not know them.

`balanced` is the default and is the `TrainingOptions` defaults themselves; the others list
only the flags they change. The figures behind each choice are in docs/accuracy.md.
"""

from __future__ import annotations

from typing import Any

from tensorguess.backbones.registry import HUB_PREFIX
from tensorguess.errors import InvalidOption
from tensorguess.options import FLAGS, TrainingOptions, options_from_flags

DEFAULT_PRESET = "balanced"
PRESETS: dict[str, dict[str, Any]] = {
    # Label smoothing paid only with fine-tuning; without, scores stay as retrain.py's.
    "fast": {"fine_tune": False, "label_smoothing": 0.0},
    "balanced": {},
    "best": {"fine_tune_blocks": 6, "fine_tune_epochs": 8},
}
PRESET_HELP = {
    "fast": "a softmax on the frozen backbone's cached features: seconds once the cache is "
    "warm, as retrain.py",
    "balanced": "the default; then fine-tunes the backbone's top blocks, which cannot use the "
    "feature cache: minutes per epoch on a CPU even with a warm cache, and a few points more "
    "accurate",
    "best": "fine-tunes more blocks for more epochs: about three times as long as balanced",
}


def preset_options(preset: str = DEFAULT_PRESET, **given: Any) -> TrainingOptions:
    """The options of `preset` (flag names in `given` take precedence), validated."""
    if preset not in PRESETS:
        raise InvalidOption(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    chosen = {**PRESETS[preset], **given}
    if str(chosen.get("backbone", "")).startswith(HUB_PREFIX) and "fine_tune" not in given:
        # Only the embedded backbones can be fine-tuned; a hub model's preset trains the head.
        chosen["fine_tune"] = False
    return options_from_flags(preset=preset, **chosen)


def preset_values(flag: str) -> dict[str, Any]:
    """What each preset sets flag `flag` to, for --help."""
    default = FLAGS[flag].default
    return {preset: values.get(flag, default) for preset, values in PRESETS.items()}
