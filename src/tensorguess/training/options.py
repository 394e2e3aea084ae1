"""The one settings tree of `train`: head, distortions and fine-tuning, validated once.

Every setting is declared once, here, with its default (the `balanced` preset, the
product's default), its range and its help; the command line's train flags are made from
this table (`FLAGS`), the presets (presets.py) name flags of it, and a library caller who
builds `TrainingOptions` gets the same checks as the command line: a value out of range or
not among its choices raises `InvalidOption` at construction, never later.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tensorguess.data.dataset import TESTING_PERCENTAGE, VALIDATION_PERCENTAGE
from tensorguess.errors import InvalidOption
from tensorguess.features.backbones import DEFAULT_BACKBONE

if TYPE_CHECKING:
    from tensorguess.classify.cluster.connection import RaySettings


@dataclass(frozen=True)
class Range:
    """A number from `low` to `high` (either may be open: None), whole when `whole`."""

    low: float | None = None
    high: float | None = None
    below_high: bool = False
    whole: bool = False

    def problem(self, value: Any) -> str | None:
        """Why `value` is not in the range, or None."""
        number_types = (int,) if self.whole else (int, float)
        if isinstance(value, bool) or not isinstance(value, number_types):
            return f"must be a {'whole number' if self.whole else 'number'}, got {value!r}"
        if not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        too_low = self.low is not None and value < self.low
        too_high = self.high is not None and (
            value >= self.high if self.below_high else value > self.high
        )
        if too_low or too_high:
            return f"{self.describe()}, got {value:g}"
        return None

    def describe(self) -> str:
        """The range in words: "must be at least 1", "must be between 0 and 100"."""
        if self.high is None:
            return f"must be at least {self.low:g}"
        if self.below_high:
            return f"must be at least {self.low:g} and under {self.high:g}"
        return f"must be between {self.low:g} and {self.high:g}"


@dataclass(frozen=True)
class OneOf:
    """One of a few words."""

    choices: tuple[str, ...]

    def problem(self, value: Any) -> str | None:
        """Why `value` is not one of the choices, or None."""
        if value in self.choices:
            return None
        return f"must be one of {', '.join(self.choices)}, got {value!r}"


class Switch:
    """On or off."""

    @staticmethod
    def problem(value: Any) -> str | None:
        """Why `value` is not a boolean, or None."""
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"


COUNT = Range(0, whole=True)
POSITIVE = Range(1, whole=True)
FRACTION = Range(0, 1, below_high=True)
PERCENT = Range(0, 100)
SPLIT_PERCENT = Range(0, 100, below_high=True)
RATE = Range(0)


def setting(default: Any, help: str, check=None, flag: str | None = None) -> Any:
    """A field of the settings tree: its default, its help and its check."""
    return field(default=default, metadata={"help": help, "check": check, "flag": flag})


def _validate(options: Any) -> None:
    for item in fields(options):
        check = item.metadata.get("check")
        value = getattr(options, item.name)
        if check is None or value is None:
            continue
        problem = check.problem(value)
        if problem:
            raise InvalidOption(f"--{item.metadata.get('flag') or item.name} {problem}")


@dataclass(frozen=True)
class HeadOptions:
    """How the head learns on the cached features."""

    hidden_units: int = setting(0, "add a hidden layer this wide, 0 for softmax only", COUNT)
    dropout: float = setting(0.0, "dropout rate", FRACTION)
    label_smoothing: float = setting(
        0.1, "spread this share of each target over the others", FRACTION
    )
    class_weights: str = setting(
        "balanced",
        "balanced: weigh each label inversely to its number of photos",
        OneOf(("none", "balanced")),
    )
    learning_rate: float = setting(0.005, "Adam's learning rate", RATE)
    learning_rate_schedule: str = setting(
        "constant", "cosine: decay to 0 over --epochs", OneOf(("constant", "cosine"))
    )
    epochs: int = setting(200, "most epochs; training stops early on validation", POSITIVE)
    batch_size: int = setting(64, "photos per step", POSITIVE)
    patience: int = setting(20, "", POSITIVE)

    def __post_init__(self) -> None:
        _validate(self)


@dataclass(frozen=True)
class DistortionOptions:
    """retrain.py's distortions (off unless set) and how many cached views of each photo.

    The head learns from `views` distorted copies of each training photo, computed once and
    cached; fine-tuning, which cannot use the cache, distorts every photo at every step.
    """

    views: int = setting(4, "cached views per photo, 0 for none", COUNT, flag="distorted_views")
    flip_left_right: bool = setting(False, "mirror half of the photos", Switch)
    random_crop: float = setting(0.0, "margin cropped off, percent", PERCENT)
    random_scale: float = setting(0.0, "most enlargement, percent", PERCENT)
    random_brightness: float = setting(0.0, "most brightening or darkening, percent", PERCENT)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def distorts(self) -> bool:
        """Whether a distorted photo can differ from the photo at all."""
        return self.flip_left_right or self.alters_pixels

    @property
    def mirrors_only(self) -> bool:
        """Whether the one distortion is the mirror image: two views of a photo, no more."""
        return self.flip_left_right and not self.alters_pixels

    @property
    def alters_pixels(self) -> bool:
        """Whether a crop, scale or brightness change makes views too many to store: each
        epoch of fine-tuning then distorts every photo afresh."""
        return any((self.random_crop, self.random_scale, self.random_brightness))

    @property
    def enabled(self) -> bool:
        """Whether distorted views are cached and used to train the head."""
        return self.views > 0 and self.distorts

    def settings(self) -> str:
        """The distortions in words: "flip, crop 10%"."""
        parts = ["flip"] if self.flip_left_right else []
        parts += [
            f"{name} {value:g}%"
            for name, value in (
                ("crop", self.random_crop),
                ("scale", self.random_scale),
                ("brightness", self.random_brightness),
            )
            if value
        ]
        return ", ".join(parts) or "none"


@dataclass(frozen=True)
class FineTuneOptions:
    """Fine-tuning of the backbone's top blocks together with the head, after the head."""

    enabled: bool = setting(
        True, "fine-tune the backbone's top blocks with the head", Switch, flag="fine_tune"
    )
    # 6 blocks since 7 December 2026: 82.9% on clothing-extra over 15 folds against 82.1% for
    # 4 x 6. 6 epochs, not 8, since later that day: 82.8% over the same folds against 82.9%, and
    # within 5 minutes for 3,000 photos on the slower of two 2-core AVX-512 CPUs, where 8
    # took 6 minutes (docs/accuracy.md).
    blocks: int = setting(6, "how many top blocks to train", POSITIVE, flag="fine_tune_blocks")
    epochs: int = setting(6, "fine-tuning epochs", POSITIVE, flag="fine_tune_epochs")
    learning_rate: float = setting(
        3e-4, "fine-tuning's learning rate", RATE, flag="fine_tune_learning_rate"
    )
    mixup: float = setting(
        0.0,
        "mix each step's photos in pairs (their top-block inputs and their labels) with "
        "weights drawn from Beta(a, a); 0: off",
        RATE,
        flag="fine_tune_mixup",
    )
    augment: str = setting(
        "none",
        "trivial: each epoch changes every photo fine-tuning learns from by one random "
        "operation (TrivialAugment: a shear, shift, rotation, colour or contrast change...), "
        "which runs the frozen blocks on every photo each epoch: an epoch about 1.3 times as long",
        OneOf(("none", "trivial")),
        flag="fine_tune_augment",
    )
    on_validation: bool = setting(
        True,
        "fine-tuning learns from the validation photos too, for every epoch, and keeps the "
        "last (the test photos stay out; a multi-label model never does: its thresholds are "
        "chosen on them); off, it keeps the epoch best on the validation photos",
        Switch,
        flag="fine_tune_on_validation",
    )
    batch_size: int = setting(32, "", POSITIVE)

    def __post_init__(self) -> None:
        _validate(self)


@dataclass(frozen=True)
class TrainingOptions:
    """Everything `train` can be told; the defaults are the `balanced` preset."""

    backbone: str = setting(
        DEFAULT_BACKBONE,
        "efficientnet_lite0, efficientnet_lite2, or hub:<handle-or-SavedModel-folder>",
    )
    image_size: int | None = setting(
        None, "input size in pixels (default: the backbone's own)", POSITIVE
    )
    validation_percentage: float = setting(
        VALIDATION_PERCENTAGE, "percent of images kept for validation", SPLIT_PERCENT
    )
    testing_percentage: float = setting(
        TESTING_PERCENTAGE, "percent of images kept for the final test", SPLIT_PERCENT
    )
    bottleneck_dir: Path | None = setting(
        None, "feature cache folder (default TF_FILES/bottlenecks)"
    )
    seed: int = setting(0, "random seed", COUNT)
    summaries_dir: Path | None = setting(
        None, "write TensorBoard summaries (cross entropy, accuracy per epoch) here"
    )
    flip_average: bool = setting(
        False,
        "the exported model averages each photo's scores with its mirror image's: about a "
        "point more accurate on clothing, at twice the cost of every guess",
        Switch,
    )
    multi_label: bool | None = setting(
        None,
        "any number of labels per photo, none included (a sigmoid per label): a photo in "
        "several data/<label>/ folders has each of their labels, data/untagged/ holds photos "
        "with none. Default: multi-label when TF_FILES/labels.csv (image,labels) exists "
        "(docs/multilabel.md); --no-multi_label ignores it",
        Switch,
    )
    report: bool = True
    engine: str | None = None
    ray: RaySettings | None = None  # features missing from the cache computed on Ray
    preset: str = "balanced"
    head: HeadOptions = HeadOptions()
    distortions: DistortionOptions = DistortionOptions()
    fine_tune: FineTuneOptions = FineTuneOptions()

    def __post_init__(self) -> None:
        _validate(self)
        if self.validation_percentage + self.testing_percentage >= 100:
            raise InvalidOption(
                "--validation_percentage plus --testing_percentage must stay under 100, got "
                f"{self.validation_percentage:g} + {self.testing_percentage:g}"
            )

    def describe(self, activation: str = "softmax") -> list[tuple[str, str]]:
        """The settings that shaped this run, in words, for the report (`activation`: the
        head's last, softmax or sigmoid)."""
        head = self.head
        layers = f"hidden layer of {head.hidden_units}, " if head.hidden_units else ""
        lines = [
            ("preset", self.preset),
            (
                "head",
                f"{layers}{activation}; Adam {head.learning_rate:g} "
                f"({head.learning_rate_schedule}), up to {head.epochs} epochs of "
                f"{head.batch_size}, dropout {head.dropout:g}, "
                f"label smoothing {head.label_smoothing:g}, class weights {head.class_weights}",
            ),
        ]
        if self.distortions.enabled:
            views = self.distortions
            lines.append(("distortions", f"{views.views} cached views ({views.settings()})"))
        if self.fine_tune.enabled:
            tune = self.fine_tune
            extras = ""
            if self.distortions.distorts:
                extras = f", distorted ({self.distortions.settings()})"
            if tune.mixup:
                extras += f", mixup {tune.mixup:g}"
            lines.append(
                (
                    "fine-tuning",
                    f"top {tune.blocks} blocks, {tune.epochs} epochs of {tune.batch_size}, "
                    f"Adam {tune.learning_rate:g} (cosine){extras}"
                    + (
                        ", on the validation photos too"
                        if tune.on_validation and activation == "softmax"
                        else ""
                    ),
                )
            )
        else:
            lines.append(("fine-tuning", "off"))
        if self.ray is not None:
            where = self.ray.address or "a local Ray runtime (or $TENSORGUESS_RAY_ADDRESS)"
            lines.append(("features", f"missing ones computed on Ray: {where}"))
        if self.flip_average:
            lines.append(("guessing", "scores averaged with the mirror image's"))
        return lines


SECTIONS = {"head": HeadOptions, "distortions": DistortionOptions, "fine_tune": FineTuneOptions}


@dataclass(frozen=True)
class Flag:
    """One train flag: where its value lives in the tree, its type, default, check and help."""

    name: str
    section: str | None
    attribute: str
    kind: Callable[[str], Any] | None
    default: Any
    check: Any
    help: str


def _flags() -> dict[str, Flag]:
    table = {}
    for section, owner in [(None, TrainingOptions), *SECTIONS.items()]:
        for item in fields(owner):
            if not item.metadata.get("help"):
                continue  # not a flag (set by presets or the caller only)
            name = item.metadata.get("flag") or item.name
            kind = {"bool": bool, "int": int, "float": float, "str": str}.get(
                str(item.type).split(" |")[0]
            )
            if "Path" in str(item.type):
                kind = Path
            default = item.default if item.default is not MISSING else None
            check, text = item.metadata["check"], item.metadata["help"]
            table[name] = Flag(name, section, item.name, kind, default, check, text)
    return table


FLAGS = _flags()


def options_from_flags(**values: Any) -> TrainingOptions:
    """`TrainingOptions` from flag names (`learning_rate=0.01`, `fine_tune=False`, ...).

    Non-flag fields of the top level (`report`, `engine`, `ray`, `preset`) are accepted too.
    """
    top = {item.name for item in fields(TrainingOptions)} - set(SECTIONS)
    nested: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    plain: dict[str, Any] = {}
    for name, value in values.items():
        flag = FLAGS.get(name)
        if flag is not None and flag.section is not None:
            nested[flag.section][flag.attribute] = value
        elif name in top:
            plain[name] = value
        else:
            raise TypeError(f"not a training option: {name}")
    defaults = TrainingOptions()
    sections = {
        section: replace(getattr(defaults, section), **given)
        for section, given in nested.items()
        if given
    }
    return replace(defaults, **plain, **sections)
