"""TF-Hub / Kaggle image feature-vector models, from a local SavedModel folder or a handle.

A local folder loads with TensorFlow alone; a remote handle needs the optional
`tensorflow-hub` package and a network. Inputs follow the TF-Hub image convention:
RGB floats in [0, 1], the size read from the model's signature or given by a flag.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tensorguess.errors import TensorguessError

DEFAULT_IMAGE_SIZE = 224


def _load(handle: str):
    import tensorflow as tf

    path = Path(handle).expanduser()
    if path.exists():
        if not (path / "saved_model.pb").is_file():
            raise TensorguessError(f"{path}: no saved_model.pb inside; give a SavedModel folder")
        try:
            return tf.saved_model.load(str(path))
        except (OSError, ValueError, tf.errors.OpError) as error:
            first_line = str(error).strip().splitlines()[0]
            raise TensorguessError(f"{path}: cannot load the SavedModel ({first_line})") from None
    try:
        import tensorflow_hub
    except ImportError:
        raise TensorguessError(
            f"hub:{handle}: no such folder; for a remote handle install tensorflow-hub "
            "(pip install 'tensorguess[hub]') and allow network access"
        ) from None
    try:
        return tensorflow_hub.load(handle)
    except Exception as error:  # noqa: BLE001  (any download or format failure is the user's to fix)
        first_line = (
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        )
        raise TensorguessError(f"hub:{handle}: cannot load ({first_line})") from None


def _signature_size(model) -> int | None:
    """The square input size when the model's call signature fixes it."""
    for function in getattr(model, "signatures", {}).values():
        for spec in function.structured_input_signature[1].values():
            shape = spec.shape
            if shape.rank == 4 and shape[1] and shape[1] == shape[2]:
                return int(shape[1])
    return None


def _content_key(handle: str) -> str:
    path = Path(handle).expanduser()
    digest = hashlib.sha256(handle.encode())
    graph = path / "saved_model.pb"
    if graph.is_file():
        digest = hashlib.sha256(graph.read_bytes())
        index = path / "variables" / "variables.index"
        if index.is_file():
            digest.update(index.read_bytes())
    return digest.hexdigest()[:12]


class HubBackbone:
    """An image feature-vector SavedModel used as a frozen backbone."""

    def __init__(self, handle: str, image_size: int | None = None):
        import tensorflow as tf

        self.handle = handle
        self.model = _load(handle)
        if not callable(self.model):
            raise TensorguessError(
                f"hub:{handle}: the SavedModel is not callable; give an image feature-vector model"
            )
        self.image_size = image_size or _signature_size(self.model) or DEFAULT_IMAGE_SIZE
        probe = self.features(tf.zeros([1, self.image_size, self.image_size, 3]))
        if probe.shape.rank != 2:
            raise TensorguessError(
                f"hub:{handle}: output shape {probe.shape} is not one feature vector per image"
            )
        self.feature_dim = int(probe.shape[1])
        self.name = f"hub:{handle}"
        self.cache_key = f"hub-{_content_key(handle)}-{self.image_size}"

    def preprocess(self, pixels):
        """RGB in [0, 255] -> [0, 1], the TF-Hub image convention."""
        return pixels / 255.0

    def features(self, pixels):
        """[B, S, S, 3] pixels in [0, 255] -> [B, feature_dim]."""
        return self.model(self.preprocess(pixels))
