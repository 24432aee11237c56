"""Reads PyTorch state dicts (`torch.save` files) with numpy only: no torch needed.

Both serialisation formats are read:
- zip (torch >= 1.6): `<name>/data.pkl` plus one raw record `<name>/data/<key>` per storage;
- legacy (torch < 1.6, or `_use_new_zipfile_serialization=False`): pickled magic number,
  protocol version and system info, the pickled object, the pickled storage keys, then
  each storage as int64 element count + raw bytes, in that key order.
In both, a tensor is pickled as `torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, ...)` with the storage a persistent id ('storage', torch.<Type>Storage, key,
location, numel[, view]). The unpickler here resolves only those few globals (tensors,
OrderedDict, storage types): any other global is refused, so a checkpoint cannot run code.
An `.npz` with the same keys is read too.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL_VERSION = 1001

STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32), "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16), "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64), "IntStorage": np.dtype(np.int32), "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8), "ByteStorage": np.dtype(np.uint8), "BoolStorage": np.dtype(np.bool_),
    "UntypedStorage": np.dtype(np.uint8),
}


class StateDictError(ValueError):
    """A file that is not a readable PyTorch state dict (or .npz)."""


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _PendingTensor:
    """A tensor whose storage bytes may come later in the file (legacy format)."""
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: _StorageRef, storage_offset: int, size: tuple, stride: tuple, *unused: Any
                    ) -> _PendingTensor:
    """torch._utils._rebuild_tensor(_v2); the v2 extras (requires_grad, hooks) do not matter here."""
    return _PendingTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: _PendingTensor, *unused: Any) -> _PendingTensor:
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()},
    ("torch.storage", "UntypedStorage"): _StorageType(np.dtype(np.uint8)),
}


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, path: str):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise StateDictError(f"{self._path}: refuses to load {module}.{name}: only tensor state dicts are "
                                  "read (no arbitrary objects)") from None

    def persistent_load(self, saved_id: Any) -> _StorageRef:
        if not (isinstance(saved_id, tuple) and len(saved_id) in (5, 6) and saved_id[0] == "storage"
                and isinstance(saved_id[1], _StorageType)):
            raise StateDictError(f"{self._path}: unsupported persistent id {saved_id!r} (not a tensor storage)")
        _, storage_type, key, _location, numel = saved_id[:5]
        if len(saved_id) == 6 and saved_id[5] is not None:
            raise StateDictError(f"{self._path}: storage views (torch < 0.4 files) are not supported")
        return _StorageRef(str(key), storage_type.dtype, int(numel))


def _unpickle(file: io.BufferedIOBase, path: str) -> Any:
    try:
        return _StateDictUnpickler(file, path).load()
    except StateDictError:
        raise
    except Exception as error:
        raise StateDictError(f"{path}: corrupt PyTorch checkpoint ({type(error).__name__}: {error})") from None


def _tensor_from_storage(pending: _PendingTensor, storage: np.ndarray, path: str) -> np.ndarray:
    """Copies the strided view; checks the view lies inside the storage first."""
    size, stride, offset = pending.size, pending.stride, pending.offset
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise StateDictError(f"{path}: bad tensor layout size {size} stride {stride} offset {offset}")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= len(storage):
        raise StateDictError(f"{path}: tensor of size {size} stride {stride} offset {offset} overruns its "
                              f"storage of {len(storage)} elements (truncated or corrupt file)")
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * itemsize for s in stride],
                                           writeable=False)
    return np.array(view)


def _materialise(obj: Any, storages: dict[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise StateDictError(f"{path}: holds a {type(obj).__name__}, not a state dict (name -> tensor)")
    state_dict = {}
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, _PendingTensor):
            raise StateDictError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor; "
                                  "expected a plain state dict (name -> tensor)")
        storage = storages.get(value.storage.key)
        if storage is None:
            raise StateDictError(f"{path}: tensor {name!r} refers to missing storage {value.storage.key!r}")
        state_dict[name] = _tensor_from_storage(value, storage, path)
    return state_dict


def _storage_array(data: bytes, ref: _StorageRef, byteorder: str, path: str) -> np.ndarray:
    dtype = ref.dtype.newbyteorder("<" if byteorder == "little" else ">") if ref.dtype.itemsize > 1 else ref.dtype
    if len(data) != ref.numel * dtype.itemsize:
        raise StateDictError(f"{path}: storage {ref.key!r} has {len(data)} bytes, expected "
                              f"{ref.numel} x {dtype.itemsize} (truncated or corrupt file)")
    return np.frombuffer(data, dtype).astype(ref.dtype.newbyteorder("="))


def _collect_refs(obj: Any) -> list[_StorageRef]:
    return [v.storage for v in obj.values() if isinstance(v, _PendingTensor)] if isinstance(obj, dict) else []


def _read_zip(path: str, archive: zipfile.ZipFile) -> dict[str, np.ndarray]:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
        raise StateDictError(f"{path}: a zip file but not a PyTorch checkpoint (no single data.pkl record)")
    prefix = pickles[0][:-len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in archive.namelist():
        byteorder = archive.read(prefix + "byteorder").decode().strip()
    obj = _unpickle(io.BytesIO(archive.read(pickles[0])), path)
    storages = {}
    for ref in _collect_refs(obj):
        if ref.key not in storages:
            record = f"{prefix}data/{ref.key}"
            try:
                data = archive.read(record)
            except KeyError:
                raise StateDictError(f"{path}: missing storage record {record}") from None
            storages[ref.key] = _storage_array(data, ref, byteorder, path)
    return _materialise(obj, storages, path)


def _read_legacy(path: str, file: io.BufferedIOBase) -> dict[str, np.ndarray]:
    not_torch = StateDictError(f"{path}: not a PyTorch checkpoint (neither the zip nor the legacy "
                                "torch.save format) nor an .npz")
    try:
        magic = pickle.load(file)
    except Exception:
        raise not_torch from None
    if magic != LEGACY_MAGIC_NUMBER:
        raise not_torch
    try:
        protocol = pickle.load(file)
        system = pickle.load(file)
    except Exception as error:
        raise StateDictError(f"{path}: corrupt legacy PyTorch checkpoint header ({error})") from None
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise StateDictError(f"{path}: unsupported legacy PyTorch protocol version {protocol!r}")
    byteorder = "little" if not isinstance(system, dict) or system.get("little_endian", True) else "big"
    obj = _unpickle(file, path)
    refs = {ref.key: ref for ref in _collect_refs(obj)}
    try:
        keys = pickle.load(file)
    except Exception as error:
        raise StateDictError(f"{path}: corrupt legacy PyTorch checkpoint (storage keys: {error})") from None
    storages = {}
    for key in keys:
        count = np.frombuffer(file.read(8), "<i8" if byteorder == "little" else ">i8")
        ref = refs.get(key)
        if len(count) != 1 or ref is None or int(count[0]) != ref.numel:
            raise StateDictError(f"{path}: storage {key!r} does not match its tensors (truncated or corrupt file)")
        storages[key] = _storage_array(file.read(ref.numel * ref.dtype.itemsize), ref, byteorder, path)
    return _materialise(obj, storages, path)


def _read_npz(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as error:
        raise StateDictError(f"{path}: unreadable .npz ({error})") from None


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """name -> numpy array from a `torch.save`d state dict (zip or legacy format) or an .npz."""
    if not os.path.isfile(path):
        raise StateDictError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if names and all(n.endswith(".npy") for n in names):
                return _read_npz(path)
            return _read_zip(path, archive)
    with open(path, "rb") as file:
        return _read_legacy(path, file)
