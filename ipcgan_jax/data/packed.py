"""Packed faces: a built dataset's split as decoded uint8 arrays, read without TensorFlow.

`python -m ipcgan_jax.data.pack` writes one folder per split under a packed path
(`config.data.packed_path`), and `sources.load_faces` reads it instead of the TFDS
dataset when that field is set, with either input backend:

  PACKED_PATH/<split>/images.npy     uint8 (N, H, W, 3), decoded by TF when packing, so
                                     both backends see the pixels tf.data sees; read
                                     memory-mapped (only the images a batch uses are read)
  PACKED_PATH/<split>/labels.npz     age_group, identity, age (N,) int64, and
                                     identity_names when the identities are strings
  PACKED_PATH/<split>/metadata.json  format, version, dataset, source, split, image_shape,
                                     count, data_config (the fields it was packed from)
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

FORMAT = "ipcgan_jax packed faces"
VERSION = 1
IMAGES_FILE = "images.npy"
LABELS_FILE = "labels.npz"
METADATA_FILE = "metadata.json"
LABEL_FIELDS = ("age_group", "identity", "age")
# Images decoded and written per read of the source while packing.
CHUNK_SIZE = 256


@dataclasses.dataclass(frozen=True)
class PackedSplit:
    """A packed split: `arrays` image (memory-mapped) and the LABEL_FIELDS, as
    `FaceSource.from_arrays` takes them."""

    name: str
    arrays: dict[str, np.ndarray]
    identity_names: tuple[str, ...] | None
    metadata: dict[str, Any]


def split_dir(packed_path: str, split: str) -> str:
    return os.path.join(os.path.expanduser(packed_path), split)


def write_split(
    packed_path: str,
    split: str,
    *,
    fetch_images: Callable[[np.ndarray], np.ndarray],
    labels: Mapping[str, np.ndarray],
    identity_names: Sequence[str] | None,
    metadata: Mapping[str, Any],
) -> str:
    """Writes the split's images (`fetch_images(indices)` -> uint8 (k, H, W, 3), all of
    one size) and `labels` (LABEL_FIELDS) under `packed_path`; returns the folder.

    The folder appears only when complete; an existing one is an error (delete it to
    pack again)."""
    directory = split_dir(packed_path, split)
    if os.path.exists(directory):
        raise FileExistsError(f"{directory} exists; delete it to pack split {split!r} again")
    count = len(labels["age_group"])
    if count == 0:
        raise ValueError(f"split {split!r} has no images to pack")
    partial = directory + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    images = None
    for start in range(0, count, CHUNK_SIZE):
        chunk = np.asarray(fetch_images(np.arange(start, min(start + CHUNK_SIZE, count))))
        if images is None:
            images = np.lib.format.open_memmap(os.path.join(partial, IMAGES_FILE), mode="w+",
                                               dtype=np.uint8, shape=(count, *chunk.shape[1:]))
        if chunk.dtype != np.uint8 or chunk.shape[1:] != images.shape[1:]:
            raise ValueError(
                f"split {split!r}: images {start}.. are {chunk.dtype} {chunk.shape[1:]}, the first "
                f"are uint8 {images.shape[1:]}; a packed split holds images of one size")
        images[start:start + len(chunk)] = chunk
    images.flush()
    image_shape = list(images.shape[1:])
    del images
    label_arrays = {field: np.asarray(labels[field], np.int64) for field in LABEL_FIELDS}
    if identity_names is not None:
        label_arrays["identity_names"] = np.asarray(list(identity_names), dtype=str)
    np.savez(os.path.join(partial, LABELS_FILE), **label_arrays)
    with open(os.path.join(partial, METADATA_FILE), "w") as file:
        json.dump({"format": FORMAT, "version": VERSION, **metadata, "split": split,
                   "image_shape": image_shape, "count": count}, file, indent=2)
    os.rename(partial, directory)
    return directory


def _read_metadata(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, METADATA_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: no packed split there (write one with "
            f"`python -m ipcgan_jax.data.pack --config=CONFIG --out=PACKED_PATH`)")
    with open(path) as file:
        metadata = json.load(file)
    if metadata.get("format") != FORMAT or metadata.get("version") != VERSION:
        raise ValueError(f"{path}: not {FORMAT!r} version {VERSION} "
                         f"(format {metadata.get('format')!r}, version {metadata.get('version')!r})")
    return metadata


def read_split(packed_path: str, split: str, dataset: str) -> PackedSplit:
    """The packed `split` of `dataset` (the config's data.name) under `packed_path`."""
    directory = split_dir(packed_path, split)
    metadata = _read_metadata(directory)
    if metadata.get("dataset") != dataset:
        raise ValueError(f"{directory}: packed from dataset {metadata.get('dataset')!r}, but "
                         f"data config field 'name' is {dataset!r}")
    images = np.load(os.path.join(directory, IMAGES_FILE), mmap_mode="r")
    labels_path = os.path.join(directory, LABELS_FILE)
    with np.load(labels_path) as labels:
        missing = set(LABEL_FIELDS) - set(labels.files)
        if missing:
            raise ValueError(f"{labels_path}: missing field(s) {sorted(missing)}")
        arrays = {field: labels[field] for field in LABEL_FIELDS}
        identity_names = (tuple(labels["identity_names"].tolist())
                          if "identity_names" in labels.files else None)
    count = int(metadata.get("count", -1))
    for field, array in (("image", images), *arrays.items()):
        if len(array) != count:
            raise ValueError(f"{directory}: field '{field}' has {len(array)} rows, "
                             f"{METADATA_FILE} says count {count}")
    name = f"{metadata.get('source', dataset)}:packed"
    return PackedSplit(name=name, arrays={"image": images, **arrays},
                       identity_names=identity_names, metadata=metadata)
