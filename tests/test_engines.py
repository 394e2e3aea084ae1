"""The fast engine against the reference: OpenVINO's features and scores beside TensorFlow's.

Tolerances (docs/benchmarks.md states them too):
- OpenVINO in float32 (`openvino-f32`): features within 1e-4, scores within 1e-4.
- OpenVINO in its default precision (bfloat16 on CPUs with AMX, else float32): every
  image's feature vector at cosine similarity >= 0.98 to TensorFlow's, the same best
  label for every image, scores within 0.03.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import draw_photos, run, tensorguess
from tensorguess.classify.loading import load_classifier
from tensorguess.data.images import load_pixels
from tensorguess.features.backbones import get_backbone
from tensorguess.features.bottlenecks import features_key, features_runner
from tensorguess.features.engines import engine_precision, resolved_engine, run_ahead


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("engine-photos")
    return draw_photos(folder, "circle", 6, seed=31) + draw_photos(folder, "square", 6, seed=31)


@pytest.fixture(scope="module")
def lite0():
    return get_backbone("efficientnet_lite0")


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_openvino_features_agree_with_tensorflow(lite0, photos):
    pixels = np.stack([load_pixels(path, lite0.image_size) for path in photos])
    reference = features_runner(lite0, "tensorflow")[0](pixels)
    exact = features_runner(lite0, "openvino-f32")[0](pixels)
    fastest = features_runner(lite0, "openvino")[0](pixels)
    assert reference.shape == exact.shape == fastest.shape == (len(photos), lite0.feature_dim)
    np.testing.assert_allclose(exact, reference, atol=1e-4)
    assert _cosine(fastest, reference).min() >= 0.98


def test_lower_precision_features_are_cached_apart(lite0):
    assert features_key(lite0, "tensorflow") == features_key(lite0, "openvino-f32")
    if engine_precision(resolved_engine("openvino")) != "f32":
        assert features_key(lite0, "openvino") != features_key(lite0, "tensorflow")


@pytest.mark.parametrize(("engine", "tolerance"), [("openvino-f32", 1e-4), ("openvino", 0.03)])
def test_openvino_scores_agree_with_tensorflow(trained, photos, engine, tolerance):
    tf_files, _ = trained
    reference = load_classifier(tf_files, engine="tensorflow")
    fast = load_classifier(tf_files, engine=engine)
    assert (reference.engine, fast.engine) == ("tensorflow", engine)
    expected = np.stack([p.scores for p in reference.classify(photos)])
    got = np.stack([p.scores for p in fast.classify(photos)])
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
    np.testing.assert_allclose(got, expected, atol=tolerance)


def test_a_converted_model_serves_later_runs_without_tensorflow(trained, photos, tmp_path):
    tf_files, _ = trained
    script = (
        "import sys, json\n"
        "from tensorguess.classify.loading import load_classifier\n"
        f"classifier = load_classifier({str(tf_files)!r}, engine='openvino')\n"
        f"scores = [p.scores.tolist() for p in classifier.classify([{str(photos[0])!r}])]\n"
        "print(json.dumps(['tensorflow' in sys.modules, scores]))\n"
    )
    env = {**os.environ, "TENSORGUESS_CACHE_DIR": str(tmp_path / "cache")}

    def load() -> list:
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
        )
        return json.loads(result.stdout.strip().splitlines()[-1])

    first_needed_tensorflow, first = load()
    later_needed_tensorflow, later = load()
    assert (first_needed_tensorflow, later_needed_tensorflow) == (True, False)
    np.testing.assert_allclose(later, first, atol=1e-6)
    # A damaged entry is rebuilt rather than trusted.
    for notes in (tmp_path / "cache" / "openvino").glob("*/notes.json"):
        notes.write_text("{not json")
    needed_tensorflow, again = load()
    assert needed_tensorflow
    np.testing.assert_allclose(again, first, atol=1e-6)


def test_an_unknown_engine_is_refused_in_one_line(trained, photos):
    tf_files, _ = trained
    result = tensorguess("guess", tf_files, photos[0], check=False, TENSORGUESS_ENGINE="turbo")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "tensorguess: error: unknown engine 'turbo' (from --engine or $TENSORGUESS_ENGINE): "
        "choose one of auto, openvino, openvino-f32, openvino-int8, tensorflow"
    ]


def test_run_ahead_keeps_batches_in_order():
    batches = [(np.full(3, number), f"batch {number}") for number in range(5)]
    results = list(run_ahead(lambda values: values * 2, iter(batches)))
    assert [extra for _, extra in results] == [f"batch {number}" for number in range(5)]
    assert [int(values[0]) for values, _ in results] == [0, 2, 4, 6, 8]


def test_the_cache_keeps_the_most_recently_used_converted_models(tmp_path):
    from tensorguess.features.engines import openvino

    for number in range(openvino.MAX_CACHED_MODELS + 4):
        entry = tmp_path / f"model-{number:02d}"
        entry.mkdir()
        os.utime(entry, (1_000_000 + number, 1_000_000 + number))
    os.utime(tmp_path / "model-00", None)  # just used: newest of all
    openvino.prune(tmp_path)
    kept = sorted(entry.name for entry in tmp_path.iterdir())
    assert len(kept) == openvino.MAX_CACHED_MODELS
    assert "model-00" in kept and "model-01" not in kept and "model-19" in kept


def test_auto_says_when_tensorflow_runs_a_graph_openvino_cannot_take(monkeypatch, capsys):
    import tensorflow as tf

    from tensorguess.features import engines

    def refused(*args, **kwargs):
        raise RuntimeError("Cannot create SomeOp layer: not supported\nmore detail")

    monkeypatch.setattr(engines, "convert", refused)
    graph_def, input_name, output_name = engines.freeze_pixels_function(
        lambda pixels: tf.reduce_mean(pixels, axis=[1, 2]), 4
    )
    run, used = engines.graph_runner(graph_def, input_name, output_name, (4, 4, 3), "auto")
    assert used == "tensorflow"
    np.testing.assert_allclose(run(np.full((1, 4, 4, 3), 2, np.uint8)), [[2, 2, 2]])
    assert capsys.readouterr().err.strip() == (
        "tensorguess: OpenVINO cannot run this graph (Cannot create SomeOp layer: not "
        "supported); TensorFlow runs it instead (slower)"
    )



def test_converting_for_openvino_sends_nothing_and_writes_nothing_home(trained, tmp_path):
    """OpenVINO's converter sends usage statistics and writes ~/intel when it can import
    openvino_telemetry; tensorguess keeps it to its silent stub."""
    home = tmp_path / "home"
    home.mkdir()
    probe = (
        "import sys; from tensorguess.cli import main; code = main(sys.argv[1:]); "
        "from openvino.tools.ovc import telemetry_utils; "
        "print(telemetry_utils.tm.__name__, file=sys.stderr); sys.exit(code)"
    )
    photo = sorted((trained[0] / "data" / "circle").iterdir())[0]
    result = run(
        sys.executable, "-c", probe, "guess", trained[0], photo,
        HOME=str(home), TENSORGUESS_CACHE_DIR=str(tmp_path / "cache"), CI="",
    )  # fmt: skip
    assert (tmp_path / "cache" / "openvino").is_dir()  # it did convert
    assert result.stderr.strip().splitlines()[-1] == "openvino.tools.ovc.telemetry_stub"
    assert not (home / "intel").exists()
