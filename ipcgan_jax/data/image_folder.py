"""TFDS builder for any folder of face images with a CSV of ages (UTKFace, MORPH, FG-NET, ...).

Several folders, each with its own CSV, build into one dataset (`manual_dirs`; the
command line takes them comma-separated); nothing is written into them. The "utkface"
config builds UTKFace's chips as they are (docs/real_faces.md):

    python -m ipcgan_jax.data.build image_folder --config=utkface \
        --manual_dir=/data/utkface_dev,/data/utkface_more --data_dir=workdirs/tfds

Build:
    builder = ImageFolder(config=ImageFolderConfig(name="utk", csv_name="labels.csv",
                                                   align_faces=False),
                          data_dir="~/tensorflow_datasets", file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="/path/to/folder"))
    train = builder.as_data_source("train")     # random access (array_record)

The build report (`face_builder.REPORT_FILE_NAME`) lands in `builder.data_dir`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from typing import Any, Iterator, Sequence

import tensorflow_datasets as tfds
from etils import epath

from ipcgan_jax.data.face_builder import AlignedFaceBuilder, AlignedFaceBuilderConfig, FaceRecord


@dataclasses.dataclass(eq=False)
class ImageFolderConfig(AlignedFaceBuilderConfig):
    """A folder of images described by a CSV.

    csv_name: CSV file inside the manual dir, with columns `path` (relative to the CSV's
      folder, or absolute), `age` and optionally `identity` (any string); other
      columns are ignored.
    path_column: the column that names the image files.
    image_dir: folder, relative to the CSV's, that the paths are relative to.
    identity_columns: when set, the identity stored is these columns' values joined by
      "_" instead of the `identity` column (UTKFace: gender and race, see the config).
    """

    csv_name: str = "labels.csv"
    path_column: str = "path"
    image_dir: str = ""
    identity_columns: tuple[str, ...] = ()
    split_by: str = "auto"


class ImageFolder(AlignedFaceBuilder):
    """Face images listed in a CSV (path, age[, identity]), aligned and cropped."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        ImageFolderConfig(name="default", description="Faces detected and aligned."),
        ImageFolderConfig(
            name="prealigned",
            align_faces=False,
            description="Images that are aligned crops already, centre-cropped and resized.",
        ),
        # Why the chips are kept as they are rather than re-aligned: docs/real_faces.md.
        ImageFolderConfig(
            name="utkface",
            align_faces=False,
            alignment_template="utkface",
            aligned_size=200,
            path_column="file",
            image_dir="images",
            # UTKFace has no identities. The gender x race class (10 classes) stands in:
            # the identity AlexNet trained on it (with its auxiliary age head) gives the
            # GAN's identity loss features that match dlib's judgement best among the
            # candidates measured (docs/real_faces.md, benchmarks/bench_identity_features.py).
            identity_columns=("gender", "race"),
            split_by="age_group",
            test_fraction=0.1,
            description="UTKFace's 200x200 'aligned and cropped' chips as they are (their framing is the "
                        "'utkface' template); each manual dir holds labels.csv (file, age, ...) and images/; "
                        "a seeded per-image split stratified by age group.",
        ),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Point `manual_dir` at a folder that holds the CSV named by the config (default
    `labels.csv`) with columns `path` (the config's `path_column`), `age` and optionally
    `identity`; paths are relative to that folder (or to its `image_dir`), or absolute.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=self._face_features({"identity": tfds.features.Text()}),
            supervised_keys=("image", "age_group"),
            description="Face images from a folder with a CSV of ages, aligned like IPCGAN's CACD crops.",
        )

    def _read_records(self, manual_dir: epath.Path) -> list[FaceRecord]:
        config = self.builder_config
        return read_csv_records(manual_dir / config.csv_name, config.path_column, config.image_dir,
                                config.identity_columns)

    def _generate_examples(
        self, records: Sequence[FaceRecord], split_name: str
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        return self._generate_face_examples(
            records, split_name, lambda record: {"identity": str(record.identity or "")}
        )


def read_csv_records(
    csv_path: os.PathLike | str, path_column: str = "path", image_dir: str = "",
    identity_columns: Sequence[str] = (),
) -> list[FaceRecord]:
    """Reads (path, age[, identity]) rows, the path from `path_column`, relative to the
    CSV's folder joined with `image_dir` (or absolute); raises ValueError naming the CSV
    on a bad header."""
    csv_path = epath.Path(csv_path)
    if not csv_path.exists():
        raise FileNotFoundError(f"label CSV {os.fspath(csv_path)!r} does not exist")
    try:
        text = csv_path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"label CSV {os.fspath(csv_path)!r} is not UTF-8 text ({error})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = {path_column, "age", *identity_columns} - set(columns)
    if missing:
        raise ValueError(
            f"{os.fspath(csv_path)!r} lacks column(s) {sorted(missing)}; has {columns}"
        )
    records = []
    first_line: dict[str, int] = {}  # normalised path -> the line that listed it
    for row in reader:
        row = {key.strip(): (value or "").strip() for key, value in row.items() if key}
        relative = row[path_column]
        if not relative:
            raise ValueError(f"{os.fspath(csv_path)!r} line {reader.line_num}: empty path")
        key = os.path.normpath(relative)  # ./a.jpg and a.jpg are one file
        if key in first_line:
            raise ValueError(f"{os.fspath(csv_path)!r} line {reader.line_num}: duplicate path {relative!r} "
                             f"(the file of line {first_line[key]})")
        first_line[key] = reader.line_num
        empty = [column for column in identity_columns if not row[column]]
        records.append(
            FaceRecord(
                path=os.fspath(csv_path.parent / image_dir / relative),
                file_name=relative,
                age=row["age"],
                identity=("_".join(row[c] for c in identity_columns) if identity_columns
                          else row.get("identity")) or None,
                problem=f"empty {', '.join(empty)} (the identity columns)" if empty else "",
            )
        )
    return records

