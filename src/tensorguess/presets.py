"""Presets: named sets of training options, so that a user need not know them.

`balanced` is the default and is the `TrainingOptions` defaults themselves; the others list
only what they change. The figures behind each choice are in docs/accuracy.md.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from tensorguess.backbones.registry import HUB_PREFIX
from tensorguess.errors import TensorguessError
from tensorguess.pipeline import TrainingOptions

DEFAULT_PRESET = "balanced"
PRESETS: dict[str, dict[str, Any]] = {
    # Label smoothing paid only with fine-tuning; without, scores stay as retrain.py's.
    "fast": {"fine_tune": False, "label_smoothing": 0.0},
    "balanced": {},
    "best": {"fine_tune_blocks": 6, "fine_tune_epochs": 8},
}


def preset_options(preset: str = DEFAULT_PRESET, **given: Any) -> TrainingOptions:
    """The options of `preset`, with every option in `given` taking precedence."""
    if preset not in PRESETS:
        raise TensorguessError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    known = {field.name for field in fields(TrainingOptions)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise TypeError(f"not training options: {', '.join(unknown)}")
    options = replace(TrainingOptions(), **{**PRESETS[preset], **given})
    if options.backbone.startswith(HUB_PREFIX) and "fine_tune" not in given:
        # Only the embedded backbones can be fine-tuned; a hub model's preset trains the head.
        options = replace(options, fine_tune=False)
    return options
