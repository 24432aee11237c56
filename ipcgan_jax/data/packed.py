"""Packed faces: a built dataset's split as decoded uint8 arrays, read without TensorFlow.

`python -m ipcgan_jax.data.pack` writes one folder per split under a packed path
(`config.data.packed_path`), and `sources.load_faces` reads it instead of the TFDS
dataset when that field is set, with either input backend:

  PACKED_PATH/<split>/images.npy     uint8 (N, H, W, 3), decoded by TF when packing, so
                                     both backends see the pixels tf.data sees; read
                                     memory-mapped (only the images a batch uses are read)
  PACKED_PATH/<split>/images_jpeg.npz  instead of images.npy when packed with a JPEG
                                     quality (metadata image_encoding 'jpeg'): `data`, the
                                     JPEG files back to back (uint8), and `offsets` (N + 1,
                                     int64); a fraction of the size, for carrying faces to
                                     another machine; decoded whole into memory when read
  PACKED_PATH/<split>/labels.npz     age_group, identity, age (N,) int64, and
                                     identity_names when the identities are strings
  PACKED_PATH/<split>/metadata.json  format, version, dataset, source, split, image_shape,
                                     count, data_config (the fields it was packed from)
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

FORMAT = "ipcgan_jax packed faces"
VERSION = 1
IMAGES_FILE = "images.npy"
JPEG_IMAGES_FILE = "images_jpeg.npz"
LABELS_FILE = "labels.npz"
METADATA_FILE = "metadata.json"
LABEL_FIELDS = ("age_group", "identity", "age")
# Inside a split's folder while it is written (SPLIT.partial): marks it as this tool's, so
# that only a folder an interrupted pack left is deleted on the next try.
PARTIAL_MARKER = ".ipcgan_jax_packing"
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


def check_jpeg_quality(jpeg_quality: int) -> None:
    """ValueError unless `jpeg_quality` is 1..100 (JPEG files of that quality) or 0 (pixels)."""
    if not 0 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality is {jpeg_quality}; expected 1..100, or 0 for decoded pixels")


def check_new_split(packed_path: str, split: str) -> None:
    """Raises FileExistsError unless `split` can be written under `packed_path`: its folder
    must not exist, nor a SPLIT.partial folder that an interrupted pack did not leave."""
    directory = split_dir(packed_path, split)
    if os.path.exists(directory):
        raise FileExistsError(f"{directory} exists; delete it to pack split {split!r} again")
    partial = directory + ".partial"
    if os.path.exists(partial) and not os.path.isfile(os.path.join(partial, PARTIAL_MARKER)):
        raise FileExistsError(f"{partial} exists and was not left by an interrupted pack; move it away")


def write_split(
    packed_path: str,
    split: str,
    *,
    fetch_images: Callable[[np.ndarray], np.ndarray],
    labels: Mapping[str, np.ndarray],
    identity_names: Sequence[str] | None,
    metadata: Mapping[str, Any],
    jpeg_quality: int = 0,
) -> str:
    """Writes the split's images (`fetch_images(indices)` -> uint8 (k, H, W, 3), all of
    one size) and `labels` (LABEL_FIELDS) under `packed_path`; returns the folder.
    jpeg_quality 1..100 stores the images as JPEG files of that quality (lossy), 0 as
    decoded pixels.

    The folder appears only when complete; an existing one is an error (delete it to
    pack again), and so is SPLIT.partial unless an interrupted pack left it."""
    check_jpeg_quality(jpeg_quality)
    check_new_split(packed_path, split)
    directory = split_dir(packed_path, split)
    count = len(labels["age_group"])
    if count == 0:
        raise ValueError(f"split {split!r} has no images to pack")
    partial = directory + ".partial"
    shutil.rmtree(partial, ignore_errors=True)  # an interrupted pack's (check_new_split)
    os.makedirs(partial)
    open(os.path.join(partial, PARTIAL_MARKER), "w").close()
    image_shape: tuple[int, ...] | None = None
    images = None  # decoded pixels, memory-mapped (jpeg_quality 0)
    encoded: list[bytes] = []  # JPEG files (jpeg_quality 1..100)
    for start in range(0, count, CHUNK_SIZE):
        chunk = np.asarray(fetch_images(np.arange(start, min(start + CHUNK_SIZE, count))))
        if image_shape is None:
            image_shape = chunk.shape[1:]
            if not jpeg_quality:
                images = np.lib.format.open_memmap(os.path.join(partial, IMAGES_FILE), mode="w+",
                                                   dtype=np.uint8, shape=(count, *image_shape))
        if chunk.dtype != np.uint8 or chunk.shape[1:] != image_shape:
            raise ValueError(
                f"split {split!r}: images {start}.. are {chunk.dtype} {chunk.shape[1:]}, the first "
                f"are uint8 {image_shape}; a packed split holds images of one size")
        if jpeg_quality:
            encoded.extend(_encode_jpeg(image, jpeg_quality) for image in chunk)
        else:
            images[start:start + len(chunk)] = chunk
    if jpeg_quality:
        offsets = np.cumsum([0] + [len(data) for data in encoded], dtype=np.int64)
        np.savez(os.path.join(partial, JPEG_IMAGES_FILE), offsets=offsets,
                 data=np.frombuffer(b"".join(encoded), np.uint8))
        metadata = {**metadata, "image_encoding": "jpeg", "jpeg_quality": jpeg_quality}
    else:
        images.flush()
        del images
    label_arrays = {field: np.asarray(labels[field], np.int64) for field in LABEL_FIELDS}
    if identity_names is not None:
        label_arrays["identity_names"] = np.asarray(list(identity_names), dtype=str)
    np.savez(os.path.join(partial, LABELS_FILE), **label_arrays)
    with open(os.path.join(partial, METADATA_FILE), "w") as file:
        json.dump({"format": FORMAT, "version": VERSION, **metadata, "split": split,
                   "image_shape": list(image_shape), "count": count}, file, indent=2)
    os.remove(os.path.join(partial, PARTIAL_MARKER))
    os.rename(partial, directory)
    return directory


def _encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _decode_jpegs(path: str, image_shape: Sequence[int], count: int) -> np.ndarray:
    """The JPEG files of `path` (JPEG_IMAGES_FILE) decoded into one uint8 array."""
    with np.load(path) as stored:
        data, offsets = stored["data"], stored["offsets"]
    if len(offsets) != count + 1:
        raise ValueError(f"{path}: {len(offsets) - 1} images, {METADATA_FILE} says count {count}")
    images = np.empty((count, *image_shape), np.uint8)

    def decode(index: int) -> None:
        image = np.asarray(Image.open(io.BytesIO(data[offsets[index]:offsets[index + 1]].tobytes())).convert("RGB"))
        if image.shape != images.shape[1:]:
            raise ValueError(f"{path}: image {index} decodes to {image.shape}, "
                             f"{METADATA_FILE} says {list(image_shape)}")
        images[index] = image

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(decode, range(count)))
    return images


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
    count = int(metadata.get("count", -1))
    if metadata.get("image_encoding") == "jpeg":
        images = _decode_jpegs(os.path.join(directory, JPEG_IMAGES_FILE), metadata["image_shape"], count)
    else:
        images = np.load(os.path.join(directory, IMAGES_FILE), mmap_mode="r")
    labels_path = os.path.join(directory, LABELS_FILE)
    with np.load(labels_path) as labels:
        missing = set(LABEL_FIELDS) - set(labels.files)
        if missing:
            raise ValueError(f"{labels_path}: missing field(s) {sorted(missing)}")
        arrays = {field: labels[field] for field in LABEL_FIELDS}
        identity_names = (tuple(labels["identity_names"].tolist())
                          if "identity_names" in labels.files else None)
    for field, array in (("image", images), *arrays.items()):
        if len(array) != count:
            raise ValueError(f"{directory}: field '{field}' has {len(array)} rows, "
                             f"{METADATA_FILE} says count {count}")
    name = f"{metadata.get('source', dataset)}:packed"
    return PackedSplit(name=name, arrays={"image": images, **arrays},
                       identity_names=identity_names, metadata=metadata)
