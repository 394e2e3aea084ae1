"""int8 at train time: quantise the exported classifier, check it, keep it or say why not.

Asked for with `train --engine openvino-int8`. After the export, the graph's OpenVINO model
is quantised (engines/int8.py) with scales measured on up to 300 of the training photos;
then the float model (in the precision guessDir would otherwise run it) and the int8 one
label the same decoded validation photos. The int8 model is kept, in
`TF_FILES/openvino-int8/`, only when its validation accuracy (a multi-label model's: its
micro-F1 at 0.5, in points) is at most MAX_ACCURACY_DROP points below the float model's;
otherwise any older one is removed and guessDir keeps the float model. Either way
tensorguess.json records both accuracies and the log says which model guess.sh and
guessDir.sh will run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tensorguess.classify.task import SINGLE, Task
from tensorguess.data.images import pixel_batches
from tensorguess.errors import TensorguessError
from tensorguess.features.engines import FLOAT32, OPENVINO_BATCH, compiled_runner
from tensorguess.features.engines.int8 import (
    INT8_FOLDER,
    Calibration,
    quantized,
    remove_int8_model,
)
from tensorguess.features.engines.openvino import convert, native_precision, save_model_folder
from tensorguess.training.model_writer import update_metadata

# The bound: int8 is kept only within half a point of float accuracy.
MAX_ACCURACY_DROP = 0.5


@dataclass(frozen=True)
class Int8Check:
    """The validation accuracy (percent) of the float and int8 classifiers, and the verdict."""

    float_precision: str
    float_accuracy: float
    int8_accuracy: float
    validation_count: int
    calibration_photos: int
    kept: bool
    figure: str = SINGLE.metric_name  # what the two "accuracies" are: accuracy, or micro-F1

    def describe(self) -> str:
        """One line for the training log."""
        change = self.int8_accuracy - self.float_accuracy
        verdict = (
            "kept: guess.sh and guessDir.sh run it"
            if self.kept
            else f"not kept (more than {MAX_ACCURACY_DROP} points lost): they run "
            f"{self.float_precision}"
        )
        return (
            f"int8: validation {self.figure} {self.int8_accuracy:.1f}% against "
            f"{self.float_accuracy:.1f}% in {self.float_precision} ({change:+.1f} points, "
            f"N={self.validation_count}, calibrated on {self.calibration_photos} training "
            f"photos); {verdict}"
        )


def quantize_classifier(
    tf_files: Path,
    graph_def,
    layout,
    graph_sha256: str,
    precision: str,
    calibration: Calibration,
    validation: Sequence[tuple[Path, int | np.ndarray]],
    task: Task = SINGLE,
) -> Int8Check:
    """Quantise the exported graph (`graph_def`, read through `layout`), compare it with the
    float model on `validation` (path, its truth as the `task` holds it: a label index, or a
    0/1 row), keep it if it passes, record the check."""
    if not validation:
        raise TensorguessError(
            "int8 needs validation photos to check its accuracy: raise --validation_percentage"
        )
    folder = Path(tf_files) / INT8_FOLDER
    remove_int8_model(folder)  # an older graph's: never compared with this one
    shape = (layout.input_height, layout.input_width, 3)
    outputs = [layout.output_layer, *([layout.novelty_layer] if layout.novelty_layer else [])]
    model = convert(graph_def, layout.input_layer, outputs, shape, OPENVINO_BATCH, True)
    int8_model = quantized(model, calibration, shape[:2])
    float32 = precision != native_precision()
    runners = [compiled_runner(model, float32), compiled_runner(int8_model, False)]
    truth = np.array([given for _, given in validation])
    scored: list[list[np.ndarray]] = [[], []]
    for pixels, _ in pixel_batches([path for path, _ in validation], shape[:2], 64):
        for index, run in enumerate(runners):
            scores = run(pixels)
            scored[index].append(scores[0] if isinstance(scores, tuple) else scores)
    accuracies = [100 * task.metric(np.concatenate(scores), truth) for scores in scored]
    check = Int8Check(
        float_precision=FLOAT32 if float32 else native_precision(),
        float_accuracy=accuracies[0],
        int8_accuracy=accuracies[1],
        validation_count=len(validation),
        calibration_photos=len(calibration.paths),
        kept=accuracies[1] >= accuracies[0] - MAX_ACCURACY_DROP,
        figure=task.metric_name,
    )
    if check.kept:
        notes = {"graph_sha256": graph_sha256, "layout": asdict(layout), **asdict(check)}
        save_model_folder(folder, int8_model, notes)
    update_metadata(tf_files, int8=asdict(check))
    return check
