"""Export: train's four model files are replaced all together or not at all; `tensorguess
export` writes files that MediaPipe, LiteRT, ONNX Runtime and TF Serving's signatures load
and that answer as guess.sh does, or says in one line why it wrote nothing."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from helpers import ROOT, SUPERHEROES, InProcess, draw_photos, in_process, wrapper
from tensorguess.data.images import load_pixels
from tensorguess.errors import TensorguessError
from tensorguess.features.novelty import fit_novelty
from tensorguess.training import model_writer as export
from tensorguess.training.head import TrainedHead
from tensorguess.training.model_writer import export_model


class TinyBackbone:
    """A stand-in backbone (the mean colour) that exports in a second."""

    name = cache_key = "tiny"
    image_size = 8
    feature_dim = 3

    def __init__(self):
        self.model = tf.Module()

    def preprocess(self, pixels):
        return pixels

    def features(self, pixels):
        return tf.reduce_mean(pixels, axis=[1, 2])


def _export(tf_files: Path, labels: list[str]) -> None:
    head = TrainedHead(
        layers=[(np.ones((3, len(labels)), np.float32), np.zeros(len(labels), np.float32))],
        test_accuracy=1.0,
        test_count=1,
        epochs_run=1,
    )
    features = np.random.default_rng(0).uniform(size=(10, 3))
    novelty = fit_novelty(features, features)
    export_model(tf_files, TinyBackbone(), "tiny", head, novelty, labels, "f32", {})


def _model(tf_files: Path) -> dict[str, str]:
    return {
        str(path.relative_to(tf_files)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(tf_files.rglob("*"))
        if path.is_file()
    }


def test_a_new_export_replaces_every_file_and_leaves_nothing_behind(tmp_path):
    _export(tmp_path, ["cat", "dog"])
    first = _model(tmp_path)
    _export(tmp_path, ["cat", "dog", "fox"])
    second = _model(tmp_path)
    assert (tmp_path / "retrained_labels.txt").read_text() == "cat\ndog\nfox\n"
    for name in ("retrained_graph.pb", "tensorguess.json", "saved_model/saved_model.pb"):
        assert first[name] != second[name], name
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "retrained_graph.pb",
        "retrained_labels.txt",
        "saved_model",
        "tensorguess.json",
    ]


@pytest.mark.parametrize("failing", ["saved model", "metadata"])
def test_an_interrupted_export_leaves_the_previous_model_whole(tmp_path, monkeypatch, failing):
    _export(tmp_path, ["cat", "dog"])
    previous = _model(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    if failing == "saved model":
        monkeypatch.setattr(export, "write_saved_model", interrupted)
    else:  # the last file written: everything else is complete by then
        real = export.write_text_atomic

        def write(target, text):
            if Path(target).name == "tensorguess.json":
                interrupted()
            real(target, text)

        monkeypatch.setattr(export, "write_text_atomic", write)
    with pytest.raises(KeyboardInterrupt):
        _export(tmp_path, ["cat", "dog", "fox"])
    assert _model(tmp_path) == previous
    assert not [path for path in tmp_path.iterdir() if path.name.startswith((".tmp-", ".old-"))]


def test_a_graph_caught_beside_another_models_labels_refuses_to_name_them(tmp_path, monkeypatch):
    """A kill between the graph's rename and the labels': the same number of labels, but
    another model's. Loading must refuse in one line, not print the other model's names."""
    from tensorguess.classify.loading import load_classifier

    _export(tmp_path, ["cat", "dog"])
    real_replace = os.replace

    def killed_after_the_graph(source, target):
        real_replace(source, target)
        if Path(target) == tmp_path / "retrained_graph.pb":
            raise KeyboardInterrupt

    monkeypatch.setattr(export.os, "replace", killed_after_the_graph)
    with pytest.raises(KeyboardInterrupt):
        _export(tmp_path, ["dog", "cat"])
    monkeypatch.setattr(export.os, "replace", real_replace)
    assert (tmp_path / "retrained_labels.txt").read_text() == "cat\ndog\n"  # the old ones
    for engine in ("tensorflow", "auto"):  # the graph read by TensorFlow, then from the cache
        with pytest.raises(TensorguessError, match="not the labels retrained_graph.pb was"):
            load_classifier(tmp_path, engine=engine)
    _export(tmp_path, ["dog", "cat"])  # a train that finishes puts things right
    assert load_classifier(tmp_path).labels == ["dog", "cat"]
    # Loaded once more from OpenVINO's cache of converted models (no graph read): same check.
    (tmp_path / "retrained_labels.txt").write_text("cat\ndog\n")
    with pytest.raises(TensorguessError, match="not the labels retrained_graph.pb was"):
        load_classifier(tmp_path, engine="openvino")


# tensorguess export: the files other runtimes load -------------------------------------------


@dataclass
class Export:
    """One `tensorguess export` of every format, the photos to check it on, and guess.sh's
    scores of them (columns in the model's label order)."""

    tf_files: Path
    output: Path
    entries: dict[str, dict]
    labels: list[str]
    photos: list[Path]
    guessed: np.ndarray
    stderr: str

    def file(self, name: str) -> Path:
        return self.output / name


@pytest.fixture(scope="module")
def exported(request, tmp_path_factory) -> Export:
    """Every format, exported once: from the superheroes model, checked on its 25 test photos,
    when ../shared has them; else from the session's shapes model, on drawn photos."""
    if SUPERHEROES.is_dir():
        tf_files, _ = request.getfixturevalue("superheroes_model")
        photos = sorted((SUPERHEROES / "test_data").glob("*.jpg"))
    else:
        tf_files, _ = request.getfixturevalue("trained")
        folder = tmp_path_factory.mktemp("photos")
        photos = draw_photos(folder, "circle", 3, 41) + draw_photos(folder, "square", 3, 42)
    output = tmp_path_factory.mktemp("exported") / "models"
    # All but tflite-fp16, which test_train_exports_after_training_any_backbone makes.
    formats = "tflite,tflite-int8,onnx,serving"
    result = in_process(
        "export",
        tf_files,
        "--format",
        formats,
        "--output",
        output,
        "--calibration_photos",
        "40",
        "--json",
    )
    labels = (tf_files / "retrained_labels.txt").read_text().split("\n")[:-1]
    answers = json.loads(wrapper("guess.sh", tf_files, *photos, "--json").stdout)
    guessed = np.array([_in_label_order(answer["predictions"], labels) for answer in answers])
    entries = {entry["format"]: entry for entry in json.loads(result.stdout)}
    return Export(tf_files, output, entries, labels, photos, guessed, result.stderr)


def _in_label_order(predictions: list[dict], labels: list[str]) -> list[float]:
    scores = {prediction["label"]: prediction["score"] for prediction in predictions}
    return [scores[label] for label in labels]


def _agreeing(scores: np.ndarray, guessed: np.ndarray) -> int:
    """How many photos get guess.sh's top label."""
    return int((scores.argmax(axis=1) == guessed.argmax(axis=1)).sum())


def test_export_writes_each_format_under_its_name_and_says_so(exported):
    names = ["model.onnx", "model.tflite", "model_int8.tflite", "serving"]
    assert sorted(path.name for path in exported.output.iterdir()) == names
    assert [path.name for path in (exported.output / "serving").iterdir()] == ["1"]
    lines = [line for line in exported.stderr.splitlines() if line.startswith("Wrote ")]
    assert len(lines) == 4, exported.stderr
    for name, entry in exported.entries.items():
        assert Path(entry["path"]).exists() and entry["bytes"] > 1_000_000, name
        assert any(line.startswith(f"Wrote {entry['path']} (") for line in lines), name
    # Quantised files name their accuracy on the test split beside float32's.
    int8 = exported.entries["tflite-int8"]
    assert int8["test_count"] > 0 and f"N={int8['test_count']})" in exported.stderr
    assert int8["test_accuracy"] >= int8["float32_test_accuracy"] - 0.015
    assert int8["bytes"] < exported.entries["tflite"]["bytes"] / 3


@pytest.mark.parametrize("name", ["model.tflite", "model_int8.tflite"])
def test_mediapipe_image_classifier_loads_the_tflite_files_as_they_are(exported, name):
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(exported.file(name)))
    )

    def scores(classifier, image) -> list[float]:
        (head,) = classifier.classify(image).classifications
        assert sorted(c.category_name for c in head.categories) == sorted(exported.labels)
        return _in_label_order(
            [{"label": c.category_name, "score": c.score} for c in head.categories],
            exported.labels,
        )

    with vision.ImageClassifier.create_from_options(options) as classifier:
        # The photo files as an app hands them over: MediaPipe decodes and squashes them
        # itself (bilinear, where guess.sh averages boxes), which moves scores a little.
        from_files = np.array(
            [scores(classifier, mp.Image.create_from_file(str(photo))) for photo in exported.photos]
        )
        # The pixels guess.sh sees, so only the model differs.
        from_pixels = np.array(
            [
                scores(
                    classifier,
                    mp.Image(image_format=mp.ImageFormat.SRGB, data=load_pixels(photo, 224)),
                )
                for photo in exported.photos
            ]
        )
    least = len(exported.photos) - 1
    assert _agreeing(from_files, exported.guessed) >= least
    assert _agreeing(from_pixels, exported.guessed) >= least
    if name == "model.tflite":
        assert np.abs(from_pixels - exported.guessed).max() <= 0.02
        assert np.abs(from_files - exported.guessed).max() <= 0.05


def test_the_tflite_metadata_reads_back_with_mediapipes_own_schema(exported):
    from mediapipe.tasks.metadata import metadata_schema_py_generated as schema
    from tensorflow.lite.python import schema_py_generated as model_schema

    data = exported.file("model_int8.tflite").read_bytes()
    model = model_schema.Model.GetRootAsModel(data, 0)
    (entry,) = [
        model.Metadata(i)
        for i in range(model.MetadataLength())
        if model.Metadata(i).Name() == b"TFLITE_METADATA"
    ]
    buffer = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    assert schema.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0)
    metadata = schema.ModelMetadataT.InitFromObj(
        schema.ModelMetadata.GetRootAsModelMetadata(buffer, 0)
    )
    trained = json.loads((exported.tf_files / "tensorguess.json").read_text())
    assert metadata.name.decode() == f"tensorguess {exported.tf_files.name} (int8)"
    assert metadata.version.decode() == trained["trained_at"]
    assert metadata.description.decode().startswith(
        f"Labels a photo as one of {len(exported.labels)}: "
    )
    assert metadata.minParserVersion == b"1.0.0"
    (subgraph,) = metadata.subgraphMetadata
    (image,) = subgraph.inputTensorMetadata
    assert image.content.contentPropertiesType == schema.ContentProperties.ImageProperties
    assert image.content.contentProperties.colorSpace == schema.ColorSpaceType.RGB
    assert image.content.contentProperties.defaultSize.width == 224
    (normalization,) = image.processUnits
    assert normalization.optionsType == schema.ProcessUnitOptions.NormalizationOptions
    assert list(normalization.options.mean) == [0.0] and list(normalization.options.std) == [1.0]
    (scores,) = subgraph.outputTensorMetadata
    (labels,) = scores.associatedFiles
    assert (
        labels.name == b"labels.txt" and labels.type == schema.AssociatedFileType.TENSOR_AXIS_LABELS
    )


def test_litert_and_onnx_runtime_agree_with_tensorflow_on_the_same_pixels(exported):
    import onnx
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter

    from tensorguess.classify.loading import load_classifier
    from tensorguess.export.tflite import operators

    pixels = np.stack([load_pixels(photo, 224) for photo in exported.photos])
    reference = load_classifier(exported.tf_files, engine="tensorflow")._scores(pixels)

    def litert(name: str) -> tuple[np.ndarray, dict, dict]:
        interpreter = Interpreter(model_path=str(exported.file(name)))
        interpreter.allocate_tensors()
        given, answer = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        rows = []
        for image in pixels:
            interpreter.set_tensor(given["index"], image[None].astype(given["dtype"]))
            interpreter.invoke()
            row = interpreter.get_tensor(answer["index"])[0].astype(np.float32)
            scale, zero_point = answer["quantization"]
            rows.append((row - zero_point) * scale if scale else row)
        return np.stack(rows), given, answer

    scores, given, _ = litert("model.tflite")
    assert list(given["shape"]) == [1, 224, 224, 3] and given["dtype"] == np.float32
    np.testing.assert_allclose(scores, reference, atol=1e-4)
    assert not {"VAR_HANDLE", "READ_VARIABLE"} & set(
        operators(exported.file("model.tflite").read_bytes())
    )
    # Full integer: camera pixels go in as they are (scale 1, zero point 0).
    scores, given, answer = litert("model_int8.tflite")
    assert given["dtype"] == np.uint8 and given["quantization"] == (1.0, 0)
    assert answer["dtype"] == np.uint8
    assert _agreeing(scores, reference) >= len(pixels) - 1

    model = onnx.load(str(exported.file("model.onnx")))
    assert model.opset_import[0].version >= 17
    properties = {entry.key: entry.value for entry in model.metadata_props}
    assert json.loads(properties["labels"]) == exported.labels
    assert json.loads(properties["normalization"]) == {"mean": [0.0] * 3, "std": [1.0] * 3}
    session = onnxruntime.InferenceSession(
        str(exported.file("model.onnx")), providers=["CPUExecutionProvider"]
    )
    (image,) = session.get_inputs()
    assert image.type == "tensor(uint8)" and image.shape[1:] == [224, 224, 3]
    np.testing.assert_allclose(session.run(None, {image.name: pixels})[0], reference, atol=1e-4)


def test_serving_answers_tf_serving_requests_with_guess_scores(exported):
    from tensorflow.core.protobuf import saved_model_pb2

    version = exported.output / "serving" / "1"
    loaded = tf.saved_model.load(str(version))
    # POST /v1/models/NAME:predict {"instances": [{"b64": ...}, ...]}: TF Serving decodes the
    # base64 strings into the one string input and answers {"predictions": [...]}.
    request = {
        "instances": [{"b64": base64.b64encode(p.read_bytes()).decode()} for p in exported.photos]
    }
    images = [base64.b64decode(instance["b64"]) for instance in request["instances"]]
    answer = loaded.signatures["serving_default"](images=tf.constant(images))
    predictions = [
        {"scores": scores.tolist(), "classes": [label.decode() for label in classes]}
        for scores, classes in zip(answer["scores"].numpy(), answer["classes"].numpy(), strict=True)
    ]
    assert all(prediction["classes"] == exported.labels for prediction in predictions)
    served = np.array([prediction["scores"] for prediction in predictions])
    assert _agreeing(served, exported.guessed) == len(exported.photos)
    assert np.abs(served - exported.guessed).max() <= 0.02
    # :classify takes tf.Example protos with the photo in the feature "image".
    examples = [
        tf.train.Example(
            features=tf.train.Features(
                feature={"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))}
            )
        ).SerializeToString()
        for data in images[:2]
    ]
    classified = loaded.signatures["classify"](inputs=tf.constant(examples))
    np.testing.assert_allclose(classified["scores"].numpy(), served[:2], atol=1e-6)
    saved_model = saved_model_pb2.SavedModel.FromString((version / "saved_model.pb").read_bytes())
    signatures = saved_model.meta_graphs[0].signature_def
    assert signatures["classify"].method_name == "tensorflow/serving/classify"
    assert signatures["serving_default"].method_name == "tensorflow/serving/predict"


def test_guess_and_evaluate_take_an_exported_model(exported, tmp_path):
    result = wrapper(
        "guess.sh",
        exported.tf_files,
        *exported.photos[:3],
        "--model",
        exported.file("model_int8.tflite"),
        "--json",
    )
    scores = np.array(
        [_in_label_order(a["predictions"], exported.labels) for a in json.loads(result.stdout)]
    )
    assert _agreeing(scores, exported.guessed[:3]) >= 2
    labelled = tmp_path / "labelled"
    for photo, row in zip(exported.photos[:4], exported.guessed[:4], strict=True):
        (labelled / exported.labels[int(row.argmax())]).mkdir(parents=True, exist_ok=True)
        (labelled / exported.labels[int(row.argmax())] / photo.name).symlink_to(photo)
    code, out, _ = _main(
        "evaluate", exported.tf_files, labelled, "--model", exported.file("model.onnx")
    )
    assert code == 0 and "Accuracy = 100.0% (N=4)" in out

    # A file that is not an exported model, or one cut short, gets one line.
    notes, cut = tmp_path / "notes.txt", tmp_path / "cut.tflite"
    notes.write_text("not a model")
    cut.write_bytes(exported.file("model_int8.tflite").read_bytes()[:5000])
    for model, words in [(notes, ".tflite or .onnx"), (cut, "cannot load the model")]:
        code, _, lines = _main("guess", exported.tf_files, exported.photos[0], "--model", model)
        assert code == 1 and len(lines) == 1 and str(model) in lines[0] and words in lines[0]


def _main(*arguments) -> tuple[int, str, list[str]]:
    """The command line run in this process: exit code, standard output and the lines of
    standard error."""
    result = in_process(*arguments, check=False)
    return result.returncode, result.stdout, result.stderr.splitlines()


def test_an_exported_file_is_explained_by_occlusion(exported, tmp_path):
    """A .tflite or .onnx file has no gradients to ask for: guess --explain still draws a map,
    by hiding parts of the photo and watching the score."""
    folder = tmp_path / "heat"
    result = wrapper(
        "guess.sh", exported.tf_files, exported.photos[0], "--model",
        exported.file("model.onnx"), "--explain", folder, "--json",
    )  # fmt: skip
    (answer,) = json.loads(result.stdout)
    heat = np.asarray(Image.open(answer["heatmap"]))
    assert heat.shape == ImageOps.exif_transpose(Image.open(exported.photos[0])).size[::-1]
    assert heat.max() == 255 and heat.min() < 128  # somewhere more evidence than elsewhere
    assert Path(answer["heatmap_overlay"]).is_file()


def test_a_ray_worker_sorts_with_the_exported_file_given_to_model(exported):
    """`guessDir.sh ... --model FILE --ray`: the file travels to the workers, which label the
    photos as a local sort does (the driver once failed on it with an internal error)."""
    from tensorguess.classify.cluster.workers import ClassifyWorker, ModelFiles
    from tensorguess.classify.exported import ExportedClassifier

    local = ExportedClassifier(exported.file("model.onnx"))
    photos = exported.photos[:4]
    worker = ClassifyWorker(InProcess(ModelFiles.of(local, {}, None)), str(photos[0].parent))
    assert worker.worker_problem() == ""
    answered = worker({"path": np.array([str(photo) for photo in photos])})["prediction"]
    for mine, theirs in zip(answered, local.classify(photos), strict=True):
        np.testing.assert_allclose(mine.scores, theirs.scores, atol=1e-6)


def test_export_refuses_bad_input_in_one_line_and_writes_nothing(exported, tmp_path):
    empty = tmp_path / "tf_files"
    empty.mkdir()
    code, _, lines = _main("export", empty)
    assert code == 1 and len(lines) == 1 and "retrained_graph.pb" in lines[0], lines
    assert "train.sh" in lines[0] and list(empty.iterdir()) == []

    code, _, lines = _main("export", exported.tf_files, "--format", "tflite,tflitex")
    assert code == 2 and "unknown format 'tflitex'" in lines[-1]
    code, _, lines = _main("train", exported.tf_files, "--export", "onnx,coreml")
    assert code == 2 and "unknown format 'coreml'" in lines[-1]

    occupied = tmp_path / "models"
    occupied.write_text("not a folder")
    code, _, lines = _main("export", exported.tf_files, "--output", occupied)
    assert code == 1 and lines == [
        f"tensorguess: error: {occupied}: a file, not a folder; give another --output"
    ]
    assert occupied.read_text() == "not a folder"


def test_a_failed_export_leaves_the_files_there_before_whole(exported, tmp_path, monkeypatch):
    from tensorguess.classify import exported as runtimes
    from tensorguess.export import formats

    output = tmp_path / "models"
    output.mkdir()
    (output / "model.tflite").write_bytes(b"the previous model")
    good = exported.file("model.tflite").read_bytes()
    monkeypatch.setattr("tensorguess.export.tflite.tflite_model", lambda *args: good)

    class Broken(runtimes.LiteRTModel):
        def scores(self, pixels):
            return np.full((len(pixels), len(exported.labels)), np.nan, np.float32)

    monkeypatch.setattr(runtimes, "LiteRTModel", Broken)
    with pytest.raises(TensorguessError, match="NaN"):
        formats.export_formats(exported.tf_files, ["tflite"], output, say=lambda line: None)
    assert sorted(path.name for path in output.iterdir()) == ["model.tflite"]
    assert (output / "model.tflite").read_bytes() == b"the previous model"


def test_weights_in_keras_variables_convert_as_constants_not_as_nan():
    """The NaN of an early EfficientNet-Lite0 experiment: handed the Keras 3 model as its
    `trackable_obj` (as TensorFlow's deprecation warning asks), the converter keeps the
    weights as variables that nothing in the .tflite fills, and their reads are garbage
    (NaN there). tflite_model gives the converter no Keras object: weights become constants.
    """
    import keras

    from tensorguess.classify.exported import LiteRTModel
    from tensorguess.export.tflite import operators, tflite_model

    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, activation="relu6"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
            keras.layers.Softmax(),
        ]
    )
    function = tf.function(model, input_signature=[tf.TensorSpec([1, 8, 8, 3])])
    pixels = np.random.default_rng(0).integers(0, 256, (1, 8, 8, 3)).astype(np.uint8)
    expected = model(np.float32(pixels)).numpy()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], model
    )
    lost = converter.convert()
    assert {"VAR_HANDLE", "READ_VARIABLE"} <= set(operators(lost))
    assert not np.allclose(LiteRTModel(lost).scores(pixels), expected, atol=1e-3)

    class KerasModel:
        image_size = 8

        @staticmethod
        def pixel_function(batch):
            return function

    kept = tflite_model(KerasModel(), "float32")
    assert not {"VAR_HANDLE", "READ_VARIABLE"} & set(operators(kept))
    np.testing.assert_allclose(LiteRTModel(kept).scores(pixels), expected, atol=1e-5)


def test_the_next_serving_version_follows_the_highest(tmp_path):
    from tensorguess.export.serving import next_version

    assert next_version(tmp_path) == 1
    for name in ("1", "3", "notes", ".tmp-export-x"):
        (tmp_path / name).mkdir()
    assert next_version(tmp_path) == 4


def test_a_missing_extra_is_installed_once_with_the_pins_and_said_in_one_line(monkeypatch, capsys):
    from tensorguess import extras

    calls = []
    monkeypatch.setitem(extras.EXTRAS, "sample", (("a_module_nobody_has",), "nobody-has"))

    def pip(command, **kwargs):
        calls.append(command)
        monkeypatch.setitem(extras.EXTRAS, "sample", (("json",), "nobody-has"))  # installed
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(extras.subprocess, "run", pip)
    extras.require_extra("sample")
    extras.require_extra("sample")
    (command,) = calls
    assert command[-4:] == ["-c", str(ROOT / "constraints.txt"), "-e", f"{ROOT}[sample]"]
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("tensorguess: installing the sample extra (nobody-has) into ")

    monkeypatch.setitem(extras.EXTRAS, "sample", (("a_module_nobody_has",), "nobody-has"))
    monkeypatch.setattr(
        extras.subprocess,
        "run",
        lambda command, **kwargs: subprocess.CompletedProcess(command, 1, "", "ERROR: no network"),
    )
    with pytest.raises(TensorguessError, match="no network.*install it yourself"):
        extras.require_extra("sample")


def test_train_exports_after_training_any_backbone(tmp_path):
    """train --export, on a hub: backbone (a small SavedModel): any backbone exports. (The
    float16 file is made here, where converting costs nothing.)"""
    from helpers import colour_photos, save_colour_features_model

    model_dir = save_colour_features_model(tmp_path / "feature_vector")
    tf_files = tmp_path / "tf_files"
    colour_photos(tf_files / "data" / "red", (220, 30, 30), 12, 1)
    colour_photos(tf_files / "data" / "blue", (30, 30, 220), 12, 2)
    code, out, lines = _main(
        "train",
        tf_files,
        "--backbone",
        f"hub:{model_dir}",
        "--no_report",
        "--export",
        "tflite-fp16,serving",
    )
    assert code == 0, lines
    export = tf_files / "export"
    assert f"Wrote {export / 'model_fp16.tflite'} (" in out
    assert f"Wrote {export / 'serving' / '1'}/ (" in out
    from tensorguess.classify.exported import ExportedClassifier

    classifier = ExportedClassifier(export / "model_fp16.tflite")
    photo = next((tf_files / "data" / "blue").iterdir())
    (prediction,) = classifier.classify([photo])
    assert classifier.labels == ["blue", "red"] and prediction.scores.argmax() == 0
