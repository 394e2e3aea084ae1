"""Presets: named sets of training options, so that a user need not know them.

`balanced` is the default and is the `TrainingOptions` defaults themselves; the others list
only the flags they change. The figures behind each choice are in docs/accuracy.md.
"""

from __future__ import annotations

from typing import Any

from tensorguess.errors import InvalidOption
from tensorguess.features.backbones.registry import HUB_PREFIX
from tensorguess.training.options import FLAGS, TrainingOptions, options_from_flags

DEFAULT_PRESET = "balanced"
PRESETS: dict[str, dict[str, Any]] = {
    # The small backbone and no fine-tuning: a retrain with a warm cache takes seconds.
    # Label smoothing paid only with fine-tuning; without, scores stay as retrain.py's.
    "fast": {"backbone": "efficientnet_lite0", "fine_tune": False, "label_smoothing": 0.0},
    "balanced": {},
    # 300 px rather than Lite2's own 260: 1.2 points more on clothing for a sixth more time.
    # It keeps its best validation epoch, as when its 84.5% was measured: fine-tuning on the
    # validation photos too, which lifted balanced, gave it 84.7% (within the spread), and
    # 85.0% against 84.9% with TrivialAugment.
    # TrivialAugment: 84.9% and 84.1% (two seeds) in 8 epochs against 84.3% and 83.3% for 10
    # without, in 12 min 13 s against 11 min 30 s on 3,066 photos (the same machine and day).
    "best": {
        "image_size": 300,
        "fine_tune_blocks": 8,
        "fine_tune_epochs": 8,
        "fine_tune_augment": "trivial",
        "flip_average": True,
        "fine_tune_on_validation": False,
    },
}
PRESET_HELP = {
    "fast": "a softmax on EfficientNet-Lite0's cached features, as retrain.py: about 25 s "
    "for 3,000 photos with an empty cache, 15 s again",
    "balanced": "the default: EfficientNet-Lite2's features, then its top 6 blocks fine-tuned "
    "for 6 epochs, which the feature cache cannot serve: about 4 and a half minutes for 3,000 "
    "photos with an empty cache, and 9 points more accurate than fast on hard photos",
    "best": "photos at 300 px, 8 blocks fine-tuned for 8 epochs on photos changed at random "
    "each epoch (TrivialAugment), and each photo's scores averaged with its mirror image's: "
    "about 12 minutes for 3,000 photos on a CPU where balanced takes 4 and a half, about a "
    "point more accurate than balanced on hard photos, and guess.sh and guessDir.sh take "
    "twice as long",
}


def preset_options(preset: str = DEFAULT_PRESET, **given: Any) -> TrainingOptions:
    """The options of `preset` (flag names in `given` take precedence), validated."""
    if preset not in PRESETS:
        raise InvalidOption(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    chosen = {**PRESETS[preset], **given}
    if str(chosen.get("backbone", "")).startswith(HUB_PREFIX):
        # Only the embedded backbones can be fine-tuned; a hub model's preset trains the head,
        # at the hub model's own input size.
        if "fine_tune" not in given:
            chosen["fine_tune"] = False
        if "image_size" not in given:
            chosen.pop("image_size", None)
    return options_from_flags(preset=preset, **chosen)


def preset_values(flag: str) -> dict[str, Any]:
    """What each preset sets flag `flag` to, for --help."""
    default = FLAGS[flag].default
    return {preset: values.get(flag, default) for preset, values in PRESETS.items()}
