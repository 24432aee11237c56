"""TFDS builder for any folder of face images with a CSV of ages (UTKFace, MORPH, FG-NET, ...).

Also holds what the CACD builder shares with it: the config fields for alignment and
splitting, the seeded splits, and the generation loop that aligns every image on every
core, skips unreadable or faceless images and writes a skip report.

Build:
    builder = ImageFolder(config=ImageFolderConfig(name="utk", csv_name="labels.csv",
                                                   align_faces=False),
                          data_dir="~/tensorflow_datasets", file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="/path/to/folder"))
    train = builder.as_data_source("train")     # random access (array_record)

The skip report `build_report.json` lands in `builder.data_dir` beside the built files.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import json
import os
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from ipcgan_jax.data.age_groups import (
    DEFAULT_BOUNDARIES,
    DEFAULT_MIN_AGE,
    age_group_labels,
    age_to_group,
    validate_boundaries,
)
from ipcgan_jax.data.alignment import FaceAligner, prepare_face_crops

REPORT_FILE_NAME = "build_report.json"


@dataclasses.dataclass(frozen=True)
class FaceRecord:
    """One image listed by the metadata, before it is read."""

    path: str  # absolute path of the file
    file_name: str  # as listed in the metadata (stored and reported)
    age: Any  # raw value; validated when the example is made
    identity: Any  # int for CACD, str for CSVs, None when unknown
    name: str = ""


@dataclasses.dataclass(eq=False)
class AlignedFaceBuilderConfig(tfds.core.BuilderConfig):
    """Alignment and split settings shared by the face builders.

    aligned_size: side of the stored square crop (the original used 400).
    align_faces: detect and align faces; False for folders of aligned crops, which are
      only centre-cropped to a square and resized.
    padding, vertical_shift, upsample: see `ipcgan_jax.data.alignment.FaceAligner`.
    age_group_boundaries, min_age: see `ipcgan_jax.data.age_groups` (younger images are
      skipped and reported).
    split_by: "identity" keeps every person in one split (the sound choice), "image"
      assigns images independently (like the published CACD splits, identities leak),
      "auto" means identity when every record has one, else image.
    test_fraction: fraction of identities (or images) in "test"; split_seed seeds it.
    Crops are stored as JPEG (TFDS' encoder).
    """

    aligned_size: int = 400
    align_faces: bool = True
    padding: float = 0.2
    vertical_shift: float = 0.03
    upsample: int = 1
    age_group_boundaries: tuple[int, ...] = DEFAULT_BOUNDARIES
    min_age: int = DEFAULT_MIN_AGE
    split_by: str = "identity"
    test_fraction: float = 0.1
    split_seed: int = 0


def split_identities(
    identities: Sequence[Any], test_fraction: float, seed: int
) -> set[Any]:
    """The seeded set of identities that go to the test split.

    Identities are sorted before shuffling so that the result depends only on the set of
    identities and the seed, not on the order of the metadata. At least one identity goes
    to each split when there are two or more.
    """
    _check_test_fraction(test_fraction)
    unique = sorted(set(identities))
    if not unique:
        return set()
    order = np.random.default_rng(seed).permutation(len(unique))
    count = int(round(test_fraction * len(unique)))
    if len(unique) >= 2:
        count = min(max(count, 1), len(unique) - 1)
    return {unique[i] for i in order[:count]}


def split_images(num_images: int, test_fraction: float, seed: int) -> np.ndarray:
    """Seeded per-image split: a boolean array, True where the image goes to test."""
    _check_test_fraction(test_fraction)
    is_test = np.zeros(num_images, dtype=bool)
    count = int(round(test_fraction * num_images))
    if num_images >= 2:
        count = min(max(count, 1), num_images - 1)
    is_test[np.random.default_rng(seed).permutation(num_images)[:count]] = True
    return is_test


def _check_test_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")


class AlignedFaceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the face builders: aligns in parallel, skips and reports bad images.

    Args (besides the TFDS ones, e.g. data_dir, config, file_format):
      aligner_factory: builds the aligner in each worker as
        ``aligner_factory(output_size=..., padding=..., vertical_shift=..., upsample=...)``;
        defaults to `FaceAligner` (dlib). Tests inject stand-in detectors through it.
      num_workers: alignment processes (None: every core).
    """

    def __init__(
        self,
        *,
        aligner_factory: Callable[..., FaceAligner] | None = None,
        num_workers: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)
        self._aligner_factory = aligner_factory or FaceAligner
        self._num_workers = num_workers
        self._skipped_by_split: dict[str, list[dict[str, str]]] = {}
        self._kept_by_split: dict[str, int] = {}

    def _face_features(self, extra: dict[str, tfds.features.FeatureConnector]) -> tfds.features.FeaturesDict:
        config = self.builder_config
        validate_boundaries(config.age_group_boundaries, config.min_age)
        size = config.aligned_size
        return tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(size, size, 3), encoding_format="jpeg"),
                "age": tfds.features.Scalar(np.int32),
                "age_group": tfds.features.ClassLabel(
                    names=list(age_group_labels(config.age_group_boundaries, config.min_age))
                ),
                "file_name": tfds.features.Text(),
                **extra,
            }
        )

    def _read_records(self, manual_dir: epath.Path) -> list[FaceRecord]:
        """Every record listed in the manual dir, in a deterministic order."""
        raise NotImplementedError

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        splits = self._split_records(self._read_records(epath.Path(dl_manager.manual_dir)))
        return {name: self._generate_examples(split_records, name)
                for name, split_records in splits.items()}

    def _split_records(self, records: Sequence[FaceRecord]) -> dict[str, list[FaceRecord]]:
        config = self.builder_config
        split_by = config.split_by
        if split_by not in ("auto", "identity", "image"):
            raise ValueError(f"split_by must be 'auto', 'identity' or 'image', got {split_by!r}")
        has_identities = bool(records) and all(r.identity not in (None, "") for r in records)
        if split_by == "auto":
            split_by = "identity" if has_identities else "image"
        if split_by == "identity":
            if not has_identities:
                missing = next(r.file_name for r in records if r.identity in (None, ""))
                raise ValueError(
                    f"split_by='identity' needs an identity for every image; {missing!r} has none"
                )
            test_identities = split_identities(
                [r.identity for r in records], config.test_fraction, config.split_seed
            )
            is_test = [r.identity in test_identities for r in records]
        else:
            is_test = split_images(len(records), config.test_fraction, config.split_seed).tolist()
        return {
            "train": [r for r, test in zip(records, is_test) if not test],
            "test": [r for r, test in zip(records, is_test) if test],
        }

    def _generate_face_examples(
        self,
        records: Sequence[FaceRecord],
        split_name: str,
        extra_fields: Callable[[FaceRecord], dict[str, Any]],
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        config = self.builder_config
        skipped: list[dict[str, str]] = []
        usable: list[tuple[FaceRecord, int, int]] = []
        for record in records:
            try:
                age = _parse_age(record.age)
                age_group = age_to_group(age, config.age_group_boundaries, config.min_age)
            except ValueError as error:
                skipped.append({"file": record.file_name, "reason": str(error)})
                continue
            usable.append((record, age, age_group))
        aligner_kwargs = {
            "padding": config.padding,
            "vertical_shift": config.vertical_shift,
            "upsample": config.upsample,
        }
        crops = prepare_face_crops(
            [record.path for record, _, _ in usable],
            output_size=config.aligned_size,
            aligner_factory=self._aligner_factory if config.align_faces else None,
            aligner_kwargs=aligner_kwargs,
            num_workers=self._num_workers,
            progress_description=f"{self.name} {split_name}: aligning faces",
        )
        kept = 0
        for (record, age, age_group), crop in zip(usable, crops):
            if crop.image is None:
                skipped.append({"file": record.file_name, "reason": crop.reason or "unknown"})
                continue
            kept += 1
            yield record.file_name, {
                "image": _encode_jpeg(crop.image),
                "age": age,
                "age_group": age_group,
                "file_name": record.file_name,
                **extra_fields(record),
            }
        self._kept_by_split[split_name] = kept
        self._skipped_by_split[split_name] = skipped
        self._write_report(split_name)

    def _write_report(self, split_name: str) -> None:
        report_path = epath.Path(self.data_dir) / REPORT_FILE_NAME
        report = {
            "dataset": f"{self.name}/{self.builder_config.name}/{self.version}",
            "splits": {
                name: {
                    "examples": self._kept_by_split[name],
                    "skipped": len(skipped),
                    "skipped_files": skipped,
                }
                for name, skipped in self._skipped_by_split.items()
            },
        }
        report_path.write_text(json.dumps(report, indent=2))
        skipped = self._skipped_by_split[split_name]
        reasons = collections.Counter(_reason_kind(entry["reason"]) for entry in skipped)
        summary = ", ".join(f"{count} {reason}" for reason, count in reasons.most_common())
        print(
            f"{self.name} {split_name}: kept {self._kept_by_split[split_name]} images, "
            f"skipped {len(skipped)}{' (' + summary + ')' if summary else ''}; "
            f"details in {REPORT_FILE_NAME} in the dataset directory"
        )


def _encode_jpeg(image: np.ndarray) -> bytes:
    # Encoded here with PIL rather than by TFDS (tf.image.encode_jpeg at the same quality
    # 95) so that a build needs no TensorFlow graph per image.
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _reason_kind(reason: str) -> str:
    return reason.split(" (")[0]


def _parse_age(value: Any) -> int:
    try:
        age = float(str(value).strip())
    except ValueError:
        raise ValueError(f"invalid age {value!r}") from None
    if not np.isfinite(age) or age != int(age) or age < 0:
        raise ValueError(f"invalid age {value!r}")
    return int(age)


@dataclasses.dataclass(eq=False)
class ImageFolderConfig(AlignedFaceBuilderConfig):
    """A folder of images described by a CSV.

    csv_name: CSV file inside the manual dir, with columns `path` (relative to the CSV's
      folder, or absolute), `age` and optionally `identity` (any string).
    """

    csv_name: str = "labels.csv"
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
            description="Images that are aligned crops already (e.g. UTKFace 'aligned and cropped').",
        ),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Point `manual_dir` at a folder that holds the CSV named by the config (default
    `labels.csv`) with columns `path`, `age` and optionally `identity`; `path` is relative
    to that folder (or absolute).
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=self._face_features({"identity": tfds.features.Text()}),
            supervised_keys=("image", "age_group"),
            description="Face images from a folder with a CSV of ages, aligned like IPCGAN's CACD crops.",
        )

    def _read_records(self, manual_dir: epath.Path) -> list[FaceRecord]:
        return read_csv_records(manual_dir / self.builder_config.csv_name)

    def _generate_examples(
        self, records: Sequence[FaceRecord], split_name: str
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        return self._generate_face_examples(
            records, split_name, lambda record: {"identity": str(record.identity or "")}
        )


def read_csv_records(csv_path: os.PathLike | str) -> list[FaceRecord]:
    """Reads (path, age[, identity]) rows; raises ValueError naming the CSV on a bad header."""
    csv_path = epath.Path(csv_path)
    if not csv_path.exists():
        raise FileNotFoundError(f"label CSV {os.fspath(csv_path)!r} does not exist")
    try:
        text = csv_path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"label CSV {os.fspath(csv_path)!r} is not UTF-8 text ({error})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = {"path", "age"} - set(columns)
    if missing:
        raise ValueError(
            f"{os.fspath(csv_path)!r} lacks column(s) {sorted(missing)}; has {columns}"
        )
    records = []
    seen = set()
    for row in reader:
        row = {key.strip(): (value or "").strip() for key, value in row.items() if key}
        relative = row["path"]
        if not relative:
            raise ValueError(f"{os.fspath(csv_path)!r} line {reader.line_num}: empty path")
        if relative in seen:
            raise ValueError(f"{os.fspath(csv_path)!r} line {reader.line_num}: duplicate path {relative!r}")
        seen.add(relative)
        records.append(
            FaceRecord(
                path=os.fspath(csv_path.parent / relative),
                file_name=relative,
                age=row["age"],
                identity=row.get("identity") or None,
            )
        )
    return records

