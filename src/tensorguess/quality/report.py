"""Pictures of a model: training curves and confusion matrix (PNG), and one HTML page.

The page is self-contained (figures and thumbnails inlined as data: URIs), so it can be
mailed or opened from a copied folder. Figures are drawn with matplotlib's object API and
its Agg canvas: no display and no global pyplot state. A multi-label model's page has a
precision-recall curve per label instead of the confusion matrix, and its worst misses,
each with the evidence for the label it got most wrong, instead of misclassified photos.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tensorguess.classify.task import MULTI_LABEL
from tensorguess.features.backbones import Backbone
from tensorguess.files import printable, write_bytes_atomic, write_text_atomic
from tensorguess.quality.evaluate import Evaluation, Miss, precision_recall_curve, score_text

if TYPE_CHECKING:
    from tensorguess.quality.doctor import Checkup
    from tensorguess.quality.explain import MistakeHeat

TRAINING_CURVES_FILE = "training_curves.png"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
PRECISION_RECALL_FILE = "precision_recall.png"
REPORT_FILE = "report.html"
THUMBNAIL_SIZE = 160
# A report stays a page, not an archive: beyond this many mistakes only a count is shown.
MOST_THUMBNAILS = 120
# Past this many labels the confusion matrix cells are too small to hold their counts.
MOST_ANNOTATED_LABELS = 30


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor="white")
    return buffer.getvalue()


def training_curves_png(
    history: dict[str, list[float]], metric_key: str = "accuracy", metric_name: str = "accuracy"
) -> bytes:
    """Cross entropy and accuracy (or the task's figure: `metric_key` in `history`) per epoch,
    train and validation; fine-tuning continues on."""
    figure = _figure(10, 4)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    head_epochs = len(history.get("loss", []))
    for axes, key, title in (
        (loss_axes, "loss", "cross entropy"),
        (accuracy_axes, metric_key, metric_name),
    ):
        for prefix, name, color in (
            ("", "train", "tab:blue"),
            ("val_", "validation", "tab:orange"),
        ):
            values = list(history.get(f"{prefix}{key}", []))
            tuned = list(history.get(f"fine_tune_{prefix}{key}", []))
            if values or tuned:
                axes.plot(
                    range(1, len(values) + len(tuned) + 1), values + tuned, color=color, label=name
                )
        if history.get(f"fine_tune_{key}"):
            # A shaded span named in the legend: a text label would sit on the curves.
            tuned_epochs = len(history[f"fine_tune_{key}"])
            axes.axvspan(
                head_epochs + 0.5,
                head_epochs + tuned_epochs + 0.5,
                color="grey",
                alpha=0.15,
                label="fine-tuning",
            )
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
        axes.legend()
    accuracy_axes.set_ylim(top=1.01)
    return _png(figure)


def confusion_matrix_png(labels: Sequence[str], confusion: Sequence[Sequence[int]]) -> bytes:
    """The confusion matrix: true label down, guessed label across, counts in the cells."""
    import numpy as np

    matrix = np.asarray(confusion, dtype=np.int64).reshape(len(labels), len(labels))
    side = min(4 + 0.45 * len(labels), 24)
    figure = _figure(side + 1.5, side)
    axes = figure.subplots()
    # Colour by the share of each true label, so a small label's mistakes show as well.
    totals = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = axes.imshow(matrix / totals, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of the true label")
    ticks = range(len(labels))
    axes.set_xticks(ticks, labels=labels, rotation=45 if len(labels) > 4 else 0, ha="right")
    axes.set_yticks(ticks, labels=labels)
    axes.set_xlabel("guessed label")
    axes.set_ylabel("true label")
    axes.set_title(f"confusion matrix (N={int(matrix.sum())})")
    if len(labels) <= MOST_ANNOTATED_LABELS:
        for row in range(len(labels)):
            for column in range(len(labels)):
                share = matrix[row, column] / totals[row, 0]
                axes.text(
                    column,
                    row,
                    str(matrix[row, column]),
                    ha="center",
                    va="center",
                    color="white" if share > 0.5 else "black",
                    fontsize=9,
                )
    return _png(figure)


def precision_recall_png(evaluation: Evaluation) -> bytes:
    """A multi-label evaluation's precision-recall curve of each label (its average precision
    in the title, a dot where its threshold puts it), small multiples four to a row."""
    labels = evaluation.labels
    columns = min(4, len(labels))
    rows = -(-len(labels) // columns)
    figure = _figure(3 * columns, 2.6 * rows)
    axes_grid = figure.subplots(rows, columns, squeeze=False)
    assert evaluation.scores is not None and evaluation.truth is not None
    for index, axes in enumerate(axes_grid.ravel()):
        if index >= len(labels):
            axes.set_axis_off()
            continue
        row = evaluation.per_label[index]
        has = evaluation.truth[:, index]
        if has.any():
            precision, recall = precision_recall_curve(evaluation.scores[:, index], has)
            axes.step([0.0, *recall], [precision[0], *precision], where="pre", color="tab:blue")
            if row.recall is not None and row.precision is not None:
                axes.plot(row.recall, row.precision, "o", color="tab:orange")
        axes.set_title(
            f"{labels[index]} (AP {score_text(row.average_precision)}, N={row.support})",
            fontsize=9,
        )
        axes.set_xlim(0, 1.02)
        axes.set_ylim(0, 1.02)
        axes.grid(alpha=0.3)
        axes.set_xlabel("recall", fontsize=8)
        axes.set_ylabel("precision", fontsize=8)
    return _png(figure)


def thumbnail_jpeg(path: Path | str, size: int = THUMBNAIL_SIZE) -> bytes | None:
    """A small upright JPEG of a photo, or None when it cannot be read."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=85)
            return buffer.getvalue()
    except Exception:  # noqa: BLE001  (a photo that cannot be shown only loses its picture)
        return None


def _data_uri(kind: str, data: bytes) -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; } td, th { padding: 0.25em 0.8em; text-align: right; }
th { border-bottom: 1px solid #999; } td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #f3f3f3; }
img.figure { max-width: 100%; border: 1px solid #ddd; }
.mistakes { display: flex; flex-wrap: wrap; gap: 12px; }
figure.mistake { margin: 0; width: 170px; font-size: 0.8em; overflow-wrap: anywhere; }
figure.mistake img { display: block; max-width: 160px; max-height: 160px; }
figure.pair { width: 340px; } figure.pair img { display: inline-block; margin-right: 4px; }
figure.explained { width: 510px; }
figure.explained img { display: inline-block; margin-right: 4px; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: bold; } dd { margin: 0; }
"""


def render_html(
    title: str,
    facts: Sequence[tuple[str, str]],
    evaluation: Evaluation | None,
    figures: Sequence[tuple[str, bytes]],
    checkup: Checkup | None = None,
    heat: dict[str, MistakeHeat] | None = None,
    miss_heat: dict[str, bytes] | None = None,
) -> str:
    """The report page: facts, figures, the per-label table, the misclassified photos (with
    `heat`, the evidence for the guessed and the true label beside each; a multi-label
    model's worst misses, with `miss_heat`, the evidence for their worst label) and the data
    check."""
    escape = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        "<dl>",
        *(f"<dt>{escape(name)}</dt><dd>{escape(value)}</dd>" for name, value in facts),
        "</dl>",
    ]
    for caption, png in figures:
        parts += [
            f"<h2>{escape(caption)}</h2>",
            f'<img class="figure" alt="{escape(caption)}" src="{_data_uri("image/png", png)}">',
        ]
    if evaluation is not None and evaluation.task == MULTI_LABEL:
        parts += _multi_label_html(evaluation, miss_heat or {})
    elif evaluation is not None:
        parts += _evaluation_html(evaluation, heat or {})
    if checkup is not None:
        parts += _checkup_html(checkup)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _evaluation_html(evaluation: Evaluation, heat: dict[str, MistakeHeat]) -> list[str]:
    escape = html.escape
    parts = ["<h2>Per label</h2>", *_per_label_table(evaluation)]
    parts.append(f"<h2>Misclassified photos ({len(evaluation.mistakes)})</h2>")
    if not evaluation.mistakes:
        parts.append("<p>None: every photo got its own label.</p>")
        return parts
    if heat:
        parts.append(
            "<p>Beside each photo, where the model found the evidence for the label it "
            "guessed, then for the true one (brighter: more; docs/explain.md).</p>"
        )
    parts.append('<div class="mistakes">')
    for mistake in evaluation.mistakes[:MOST_THUMBNAILS]:
        explained = heat.get(mistake.path)
        images = _picture(mistake.path, mistake.truth)
        if explained is not None:
            images += "".join(
                f'<img alt="evidence for {escape(label)}" title="evidence for {escape(label)}" '
                f'src="{_data_uri("image/jpeg", picture)}">'
                for label, picture in (
                    (mistake.guess, explained.guess),
                    (mistake.truth, explained.truth),
                )
            )
        kind = "mistake explained" if explained is not None else "mistake"
        parts.append(
            f'<figure class="{kind}">{images}<figcaption><b>{escape(mistake.truth)}</b> '
            f"guessed as <b>{escape(mistake.guess)}</b> ({mistake.guess_score:.3f})<br>"
            f"{escape(printable(Path(mistake.path).name))}</figcaption></figure>"
        )
    parts.append("</div>")
    if len(evaluation.mistakes) > MOST_THUMBNAILS:
        parts.append(f"<p>... and {len(evaluation.mistakes) - MOST_THUMBNAILS} more.</p>")
    return parts


def _per_label_table(evaluation: Evaluation) -> list[str]:
    """The per-label table (multi-label: with average precision and threshold)."""
    multi_label = evaluation.task == MULTI_LABEL
    extra = "<th>average precision</th><th>threshold</th>" if multi_label else ""
    parts = [
        "<table><tr><th>label</th><th>precision</th><th>recall</th><th>F1</th>"
        f"{extra}<th>photos</th></tr>"
    ]
    for row in evaluation.per_label:
        figures = ""
        if multi_label:
            figures = (
                f"<td>{score_text(row.average_precision)}</td><td>{score_text(row.threshold)}</td>"
            )
        parts.append(
            f"<tr><td>{html.escape(row.label)}</td><td>{score_text(row.precision)}</td>"
            f"<td>{score_text(row.recall)}</td><td>{score_text(row.f1)}</td>{figures}"
            f"<td>{row.support}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _multi_label_html(evaluation: Evaluation, heat: dict[str, bytes]) -> list[str]:
    """A multi-label evaluation: the figures, the per-label table, the worst misses."""
    parts = [
        "<h2>Per label</h2>",
        f"<p>micro-F1 {score_text(evaluation.micro_f1)}, macro-F1 "
        f"{score_text(evaluation.macro_f1)}, mAP {score_text(evaluation.mean_average_precision)}"
        f"; exact match (every label of a photo right) {100 * (evaluation.accuracy or 0):.1f}% "
        f"of {evaluation.count} photos.</p>",
        *_per_label_table(evaluation),
    ]
    misses = evaluation.misses
    count = len(misses)
    parts.append(f"<h2>Worst misses ({count} photo{'s' * (count != 1)} with a label wrong)</h2>")
    if heat:
        parts.append(
            "<p>Beside each photo, where the model found the evidence for the label it got "
            "most wrong (brighter: more; docs/explain.md).</p>"
        )
    figures = [_miss_figure(miss, heat.get(miss.path)) for miss in misses[:MOST_THUMBNAILS]]
    _gallery(parts, misses, figures)
    return parts


def _miss_figure(miss: Miss, heat: bytes | None) -> str:
    escape = html.escape
    images = _picture(miss.path, " ".join(miss.truth))
    if heat is not None:
        images += (
            f'<img alt="evidence for {escape(miss.label)}" '
            f'title="evidence for {escape(miss.label)}" src="{_data_uri("image/jpeg", heat)}">'
        )
    kind = "mistake pair" if heat is not None else "mistake"
    how = "missed" if miss.missed else "given wrongly"
    return (
        f'<figure class="{kind}">{images}<figcaption>has <b>{escape(" ".join(miss.truth) or "-")}'
        f"</b>, given <b>{escape(' '.join(miss.given) or '-')}</b>; {escape(miss.label)} {how} "
        f"({miss.score:.3f})<br>{_file_name(miss.path)}</figcaption></figure>"
    )


def miss_heat_maps(classifier, misses: Sequence[Miss], say) -> dict[str, bytes]:
    """The evidence for the worst label of each of the first `explain.REPORT_HEAT_MAPS`
    misses (JPEG thumbnails, by photo); none, said in one line, for a model that cannot be
    explained."""
    from tensorguess.quality.explain import (
        REPORT_HEAT_MAPS,
        evidence_thumbnails,
        report_explainer,
    )

    chosen = list(misses[:REPORT_HEAT_MAPS])
    explainer = report_explainer(classifier, say) if chosen else None
    if explainer is None:
        return {}
    items = [(miss.path, miss.label, miss.score) for miss in chosen]
    thumbnails = evidence_thumbnails(explainer, classifier.labels, items, THUMBNAIL_SIZE)
    return {path: picture for (path, _), picture in thumbnails.items()}


def _picture(path: str, alt: str) -> str:
    picture = thumbnail_jpeg(path)
    if picture is None:
        return "<p>(cannot show this file)</p>"
    return f'<img alt="{html.escape(alt)}" src="{_data_uri("image/jpeg", picture)}">'


def _file_name(path: str) -> str:
    return html.escape(printable(Path(path).name))


def _gallery(parts: list[str], items: Sequence, figures: list[str]) -> None:
    """Thumbnails with captions (`figures`, the first MOST_THUMBNAILS of `items`)."""
    if not items:
        parts.append("<p>None found.</p>")
        return
    parts += ['<div class="mistakes">', *figures, "</div>"]
    if len(items) > MOST_THUMBNAILS:
        parts.append(f"<p>... and {len(items) - MOST_THUMBNAILS} more.</p>")


def _checkup_html(checkup: Checkup) -> list[str]:
    """The data check: label counts, likely mislabelled photos, near-duplicates, outliers."""
    escape, name = html.escape, _file_name
    parts = [
        "<h2>Data check</h2>",
        "<p>Nothing was moved or changed: look, then fix data/ by hand. "
        "<code>tensorguess doctor TF_FILES --json</code> lists the same.</p>",
        "<table><tr><th>label</th><th>photos</th></tr>",
        *(
            f"<tr><td>{escape(label)}</td><td>{count}</td></tr>"
            for label, count in checkup.counts.items()
        ),
        "</table>",
    ]
    if checkup.multi_label:
        for kind, sign, changes in (
            ("missing", "+", checkup.missing_labels),
            ("extra", "-", checkup.extra_labels),
        ):
            parts.append(f"<h2>Likely {kind} labels ({len(changes)})</h2>")
            _gallery(
                parts,
                changes,
                [
                    f'<figure class="mistake">{_picture(change.path, " ".join(change.labels))}'
                    f"<figcaption>labelled <b>{escape(' '.join(change.labels) or 'nothing')}"
                    f"</b> {sign} <b>{escape(change.label)}</b> ({change.wrong:.2f})<br>"
                    f"{name(change.path)}</figcaption></figure>"
                    for change in changes[:MOST_THUMBNAILS]
                ],
            )
    else:
        parts.append(f"<h2>Likely mislabelled ({len(checkup.label_issues)})</h2>")
        _gallery(
            parts,
            checkup.label_issues,
            [
                f'<figure class="mistake">{_picture(issue.path, issue.label)}<figcaption>'
                f"labelled <b>{escape(issue.label)}</b>, likely "
                f"<b>{escape(issue.suggested)}</b> ({issue.confidence:.2f})<br>"
                f"{name(issue.path)}</figcaption></figure>"
                for issue in checkup.label_issues[:MOST_THUMBNAILS]
            ],
        )
    parts.append(f"<h2>Near-duplicates ({len(checkup.near_duplicates)} pairs)</h2>")
    figures = []
    for pair in checkup.near_duplicates[:MOST_THUMBNAILS]:
        notes = ["identical" if pair.identical else f"similarity {pair.similarity:.3f}"]
        notes += [
            f"{label} ({split})" for label, split in zip(pair.labels, pair.splits, strict=True)
        ]
        pictures = "".join(
            _picture(path, label) for path, label in zip(pair.paths, pair.labels, strict=True)
        )
        figures.append(
            f'<figure class="mistake pair">{pictures}<figcaption>{escape("; ".join(notes))}<br>'
            f"{name(pair.paths[0])} ~ {name(pair.paths[1])}</figcaption></figure>"
        )
    _gallery(parts, checkup.near_duplicates, figures)
    parts.append(f"<h2>Outliers: far from every label ({len(checkup.outliers)})</h2>")
    _gallery(
        parts,
        checkup.outliers,
        [
            f'<figure class="mistake">{_picture(outlier.path, outlier.label)}<figcaption>'
            f"<b>{escape(outlier.label)}</b>, novelty {outlier.novelty:.3f}<br>"
            f"{name(outlier.path)}</figcaption></figure>"
            for outlier in checkup.outliers[:MOST_THUMBNAILS]
        ],
    )
    return parts


def training_facts(
    backbone: Backbone,
    splits: dict[str, Sequence],
    evaluation: Evaluation,
    settings: Sequence[tuple[str, str]],
    seconds: float,
) -> list[tuple[str, str]]:
    """The report's header for a training run: result, backbone, photos, settings, time."""
    name, value = evaluation.headline
    if value is None:
        result = "n/a (no test photos)"
    elif evaluation.task == MULTI_LABEL:
        result = (
            f"{value:.3f}, mAP {score_text(evaluation.mean_average_precision)} "
            f"(N={evaluation.count})"
        )
    else:
        result = f"{100 * value:.1f}% (N={evaluation.count})"
    return [
        (f"test {name}", result),
        ("backbone", f"{backbone.name} at {backbone.image_size} px"),
        ("photos", ", ".join(f"{len(split)} {name}" for name, split in splits.items())),
        *settings,
        ("training time", f"{seconds:.0f} s"),
    ]


def write_summaries(
    folder: Path, history: dict[str, list[float]], metric_key: str = "accuracy"
) -> None:
    """TensorBoard scalars per epoch under `folder`/train and /validation, as retrain.py did
    (cross entropy, and accuracy or the task's figure: `metric_key`).

    Fine-tuning epochs continue the head's epochs on the same curves. `tf.summary.scalar`
    lives in the tensorboard package; `tf.summary.write` with the scalars plugin's metadata
    writes the same record with TensorFlow alone.
    """
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    for split, prefix in (("train", ""), ("validation", "val_")):
        writer = tf.summary.create_file_writer(str(Path(folder) / split))
        with writer.as_default():
            for key, tag in (("loss", "cross_entropy"), (metric_key, metric_key)):
                values = history.get(f"{prefix}{key}", []) + history.get(
                    f"fine_tune_{prefix}{key}", []
                )
                for epoch, value in enumerate(values, start=1):
                    tf.summary.write(
                        tag,
                        tf.constant(value, tf.float32),
                        step=epoch,
                        metadata=metadata.SerializeToString(),
                    )
        writer.close()


def write_report(
    page: Path,
    title: str,
    facts: Sequence[tuple[str, str]],
    evaluation: Evaluation | None,
    history: dict[str, list[float]] | None = None,
    save_figures: bool = True,
    checkup: Checkup | None = None,
    heat: dict[str, MistakeHeat] | None = None,
    miss_heat: dict[str, bytes] | None = None,
    metric: tuple[str, str] = ("accuracy", "accuracy"),
) -> list[Path]:
    """Write the page (and, with `save_figures`, each figure as a PNG beside it); return
    paths. `metric`: the history's key and name of the figure an epoch was judged by."""
    page = Path(page)
    figures: list[tuple[str, str, bytes]] = []
    if history and history.get("loss"):
        curves = training_curves_png(history, *metric)
        figures.append(("Training curves", TRAINING_CURVES_FILE, curves))
    if evaluation is not None and evaluation.count and evaluation.task == MULTI_LABEL:
        curves = precision_recall_png(evaluation)
        figures.append(("Precision and recall per label", PRECISION_RECALL_FILE, curves))
    elif evaluation is not None and evaluation.count:
        figures.append(
            (
                "Confusion matrix",
                CONFUSION_MATRIX_FILE,
                confusion_matrix_png(evaluation.labels, evaluation.confusion),
            )
        )
    written = []
    if save_figures:
        for _, name, png in figures:
            write_bytes_atomic(page.parent / name, png)
            written.append(page.parent / name)
    created = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    text = render_html(
        title,
        [*facts, ("written", created)],
        evaluation,
        [(caption, png) for caption, _, png in figures],
        checkup,
        heat,
        miss_heat,
    )
    write_text_atomic(page, text)
    written.append(page)
    return written
