"""TFDS builder for CACD2000 (Cross-Age Celebrity Dataset), aligned like IPCGAN.

Every listed image is read, its face detected and aligned to an `aligned_size` square
(400 by default, as the original; framing: docs/faithfulness.md §11) and stored as JPEG
with its age, age group, identity (1..2000, as in the metadata), celebrity name and
source file name.

Configs:
  identity_split (default): a seeded, identity-disjoint train/test split; every
    celebrity's images are in one split only (`test_fraction` of the identities in test).
  image_split: a seeded per-image split like the published lists (identities leak).

Images that are missing, unreadable or without a face are skipped; `build_report.json`
in `builder.data_dir` names each with the reason, and a summary is printed.

    builder = Cacd(data_dir="~/tensorflow_datasets")   # array_record by default
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="/path/to/cacd"))
    source = builder.as_data_source("train")            # random access
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

import numpy as np
import scipy.io
import tensorflow_datasets as tfds
from etils import epath

from ipcgan_jax.data.face_builder import AlignedFaceBuilder, AlignedFaceBuilderConfig, FaceRecord

METADATA_FILE_NAME = "celebrity2000_meta.mat"
IMAGE_FOLDER_NAME = "CACD2000"


def read_cacd_metadata(metadata_path: os.PathLike | str, image_folder: os.PathLike | str) -> list[FaceRecord]:
    """One `FaceRecord` per row of `celebrityImageData`, in metadata order.

    Raises:
      FileNotFoundError: no metadata file.
      ValueError: the file lacks a struct or field, or its columns differ in length.
    """
    metadata_path = epath.Path(metadata_path)
    if not metadata_path.exists():
        raise FileNotFoundError(
            f"CACD metadata {os.fspath(metadata_path)!r} does not exist; "
            f"put {METADATA_FILE_NAME} in the manual dir"
        )
    with metadata_path.open("rb") as handle:
        try:
            metadata = scipy.io.loadmat(handle)
        except Exception as error:
            raise ValueError(f"cannot read CACD metadata {os.fspath(metadata_path)!r}: {error}") from None
    celebrities = _struct_fields(metadata, "celebrityData", ("name", "identity"), metadata_path)
    images = _struct_fields(metadata, "celebrityImageData", ("name", "age", "identity"), metadata_path)
    name_by_identity = {
        int(identity): _matlab_string(name)
        for identity, name in zip(celebrities["identity"], celebrities["name"])
    }
    image_folder = epath.Path(image_folder)
    records = []
    for file_cell, age, identity in zip(images["name"], images["age"], images["identity"]):
        file_name = _matlab_string(file_cell)
        identity = int(identity)
        records.append(
            FaceRecord(
                path=os.fspath(image_folder / file_name),
                file_name=file_name,
                age=int(age),
                identity=identity,
                name=name_by_identity.get(identity, _name_from_file_name(file_name)),
            )
        )
    return records


def _struct_fields(
    metadata: dict[str, Any], struct_name: str, fields: Sequence[str], path: epath.Path
) -> dict[str, np.ndarray]:
    if struct_name not in metadata:
        raise ValueError(f"CACD metadata {os.fspath(path)!r} has no {struct_name!r} struct")
    struct = metadata[struct_name]
    available = struct.dtype.names or ()
    columns = {}
    for field in fields:
        if field not in available:
            raise ValueError(f"CACD metadata {os.fspath(path)!r}: {struct_name} has no field {field!r}")
        columns[field] = np.asarray(struct[field][0, 0]).reshape(-1)
    lengths = {field: len(column) for field, column in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"CACD metadata {os.fspath(path)!r}: {struct_name} field lengths differ: {lengths}")
    return columns


def _matlab_string(cell: Any) -> str:
    value = np.asarray(cell).reshape(-1)
    return str(value[0]) if value.size else ""


def _name_from_file_name(file_name: str) -> str:
    # "<age>_<First_Last>_<NNNN>.jpg" -> "First_Last"
    stem = os.path.splitext(file_name)[0]
    parts = stem.split("_")
    return "_".join(parts[1:-1]) if len(parts) >= 3 else stem


class Cacd(AlignedFaceBuilder):
    """CACD2000 faces, aligned and cropped like IPCGAN's 400x400 training images."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        AlignedFaceBuilderConfig(
            name="identity_split",
            split_by="identity",
            description="Identity-disjoint seeded split (10% of celebrities in test).",
        ),
        AlignedFaceBuilderConfig(
            name="image_split",
            split_by="image",
            description="Per-image seeded split like the published lists (identities leak).",
        ),
    ]
    DEFAULT_CONFIG_NAME = "identity_split"
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Download CACD2000 from https://bcsiriuschen.github.io/CARC/ and point `manual_dir`
    at a folder holding `{IMAGE_FOLDER_NAME}/` (the 250x250 JPEGs named
    `<age>_<First_Last>_<NNNN>.jpg`) and `{METADATA_FILE_NAME}`.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=self._face_features(
                {"identity": tfds.features.Scalar(np.int32), "name": tfds.features.Text()}
            ),
            supervised_keys=("image", "age_group"),
            homepage="https://bcsiriuschen.github.io/CARC/",
            description="CACD2000 celebrity faces aligned and cropped as in IPCGAN (CVPR 2018).",
        )

    def _read_records(self, manual_dir: epath.Path) -> list[FaceRecord]:
        return read_cacd_metadata(manual_dir / METADATA_FILE_NAME, manual_dir / IMAGE_FOLDER_NAME)

    def _generate_examples(
        self, records: Sequence[FaceRecord], split_name: str
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        return self._generate_face_examples(
            records,
            split_name,
            lambda record: {"identity": int(record.identity), "name": record.name},
        )
