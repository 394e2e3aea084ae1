"""Export: the four model files are replaced all together or not at all."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tensorguess import export
from tensorguess.export import export_model
from tensorguess.head import TrainedHead
from tensorguess.novelty import fit_novelty


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
