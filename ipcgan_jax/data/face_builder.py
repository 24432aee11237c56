"""What the face dataset builders (CACD, image folders) share.

The config fields for alignment and splitting, the seeded splits, and the generation
loop that aligns every image on every core (`face_crops`), skips unreadable or faceless
images, and writes the build report `build_report.json` (split settings, examples per
age group, skipped files with the reason) into `builder.data_dir` beside the built files.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import os
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from ipcgan_jax.constants import AGE_GROUP_UPPER_AGES, MAX_LABELLED_AGE, MIN_AGE
from ipcgan_jax.data.age_groups import (
    age_group_labels,
    age_to_group,
    validate_boundaries,
)
from ipcgan_jax.data.alignment import FaceAligner
from ipcgan_jax.data.face_crops import AlignerFactory, prepare_face_crops
from ipcgan_jax.data.face_templates import DEFAULT_TEMPLATE

REPORT_FILE_NAME = "build_report.json"


@dataclasses.dataclass(frozen=True)
class FaceRecord:
    """One image listed by the metadata, before it is read."""

    path: str  # absolute path of the file
    file_name: str  # as listed in the metadata (stored and reported)
    age: Any  # raw value; validated when the example is made
    identity: Any  # int for CACD, str for CSVs, None when unknown
    name: str = ""
    problem: str = ""  # why the metadata's row is unusable (skipped and reported); "" if none


@dataclasses.dataclass(eq=False)
class AlignedFaceBuilderConfig(tfds.core.BuilderConfig):
    """Alignment and split settings shared by the face builders.

    aligned_size: side of the stored square crop (the original used 400).
    align_faces: detect and align faces; False for folders of aligned crops, which are
      only centre-cropped to a square and resized.
    alignment_template: where the landmarks go, a name in
      `ipcgan_jax.data.face_templates.FACE_TEMPLATES` ("cacd" or "utkface"). Recorded
      for folders of aligned crops too: it names their framing, which the photo tool
      must reproduce (config.data.alignment_template).
    padding, vertical_shift, upsample: see `ipcgan_jax.data.alignment.FaceAligner`;
      padding and vertical_shift None: the template's own.
    age_group_boundaries, min_age: see `ipcgan_jax.data.age_groups` (younger images are
      skipped and reported).
    split_by: "identity" keeps every person in one split (the sound choice), "image"
      assigns images independently (like the published CACD splits, identities leak),
      "age_group" assigns images independently within each age group, so that every
      group sends `test_fraction` of its images to test (for folders without
      identities), "auto" means identity when every record has one, else image.
    test_fraction: fraction of identities (or images) in "test"; split_seed seeds it.
    Crops are stored as JPEG (TFDS' encoder).
    """

    aligned_size: int = 400
    align_faces: bool = True
    alignment_template: str = DEFAULT_TEMPLATE
    padding: float | None = None
    vertical_shift: float | None = None
    upsample: int = 1
    age_group_boundaries: tuple[int, ...] = AGE_GROUP_UPPER_AGES
    min_age: int = MIN_AGE
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
    return {unique[i] for i in order[:_test_count(len(unique), test_fraction)]}


def split_images(num_images: int, test_fraction: float, seed: int) -> np.ndarray:
    """Seeded per-image split: a boolean array, True where the image goes to test."""
    _check_test_fraction(test_fraction)
    is_test = np.zeros(num_images, dtype=bool)
    order = np.random.default_rng(seed).permutation(num_images)
    is_test[order[:_test_count(num_images, test_fraction)]] = True
    return is_test


def split_images_by_group(groups: Sequence[int], test_fraction: float, seed: int) -> np.ndarray:
    """Seeded per-image split stratified by `groups` (e.g. age groups): each group sends
    `test_fraction` of its images to test, at least one of a group of two or more, so
    every group is in both splits. A boolean array, True where the image goes to test."""
    _check_test_fraction(test_fraction)
    groups = np.asarray(groups)
    is_test = np.zeros(len(groups), dtype=bool)
    rng = np.random.default_rng(seed)
    for group in np.unique(groups):  # sorted: the draws do not depend on the first group seen
        members = np.flatnonzero(groups == group)
        is_test[rng.permutation(members)[:_test_count(len(members), test_fraction)]] = True
    return is_test


def _test_count(num_images: int, test_fraction: float) -> int:
    count = int(round(test_fraction * num_images))
    if num_images >= 2:
        count = min(max(count, 1), num_images - 1)
    return count


SPLIT_BY = ("auto", "identity", "image", "age_group")


def _check_test_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")


class AlignedFaceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the face builders: aligns in parallel, skips and reports bad images.

    Args (besides the TFDS ones, e.g. data_dir, config, file_format):
      aligner_factory: builds the aligner in each worker as
        ``aligner_factory(output_size=..., template=..., padding=..., vertical_shift=...,
        upsample=...)``; defaults to `FaceAligner` (dlib). Tests inject stand-in detectors
        through it.
      num_workers: alignment processes (None: every core).
      manual_dirs: several folders, each laid out as a manual dir, to build into one
        dataset (their records in this order, each file name prefixed by its folder's
        name); None: the download config's `manual_dir` alone.
    """

    def __init__(
        self,
        *,
        aligner_factory: AlignerFactory | None = None,
        num_workers: int | None = None,
        manual_dirs: Sequence[os.PathLike | str] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)
        self._aligner_factory = aligner_factory or FaceAligner
        self._num_workers = num_workers
        self._manual_dirs = [epath.Path(d) for d in manual_dirs] if manual_dirs else None
        self._source_dirs: list[str] = []  # the folders read, as recorded in the build report
        self._skipped_by_split: dict[str, list[dict[str, str]]] = {}
        self._kept_by_split: dict[str, collections.Counter[int]] = {}
        self._split_by_used = ""

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
        if self._manual_dirs is None:
            folders = [epath.Path(dl_manager.manual_dir)]
            records = self._read_records(folders[0])
        else:
            folders = self._manual_dirs
            records = self._read_several(folders)
        self._source_dirs = [os.path.abspath(os.fspath(folder)) for folder in folders]
        splits = self._split_records(records)
        empty = [name for name, split_records in splits.items() if not split_records]
        if empty:  # TFDS would stop on the empty split with an assertion
            raise ValueError(f"{', '.join(self._source_dirs)} list(s) {len(records)} image(s): too few for a "
                             f"'train' and a 'test' split (test_fraction {self.builder_config.test_fraction})")
        return {name: self._generate_examples(split_records, name)
                for name, split_records in splits.items()}

    def _read_several(self, manual_dirs: Sequence[epath.Path]) -> list[FaceRecord]:
        names = [d.name for d in manual_dirs]
        if len(set(names)) != len(names):
            raise ValueError(f"manual dirs must have distinct folder names (file names are prefixed "
                             f"with them), got {[os.fspath(d) for d in manual_dirs]}")
        return [dataclasses.replace(record, file_name=f"{folder.name}/{record.file_name}")
                for folder in manual_dirs for record in self._read_records(folder)]

    def _split_records(self, records: Sequence[FaceRecord]) -> dict[str, list[FaceRecord]]:
        config = self.builder_config
        split_by = config.split_by
        if split_by not in SPLIT_BY:
            raise ValueError(f"split_by must be one of {SPLIT_BY}, got {split_by!r}")
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
        elif split_by == "age_group":
            strata = []
            for record in records:
                try:
                    strata.append(self._age_and_group(record)[1])
                except ValueError:  # skipped later, with the reason; a stratum of its own
                    strata.append(-1)
            is_test = split_images_by_group(strata, config.test_fraction, config.split_seed).tolist()
        else:
            is_test = split_images(len(records), config.test_fraction, config.split_seed).tolist()
        self._split_by_used = split_by
        return {
            "train": [r for r, test in zip(records, is_test) if not test],
            "test": [r for r, test in zip(records, is_test) if test],
        }

    def _age_and_group(self, record: FaceRecord) -> tuple[int, int]:
        """(age, age group); ValueError for a row the metadata left unusable, an invalid
        age or one below min_age."""
        if record.problem:
            raise ValueError(record.problem)
        config = self.builder_config
        age = _parse_age(record.age)
        return age, age_to_group(age, config.age_group_boundaries, config.min_age)

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
                age, age_group = self._age_and_group(record)
            except ValueError as error:
                skipped.append({"file": record.file_name, "reason": str(error)})
                continue
            usable.append((record, age, age_group))
        aligner_kwargs = {
            "template": config.alignment_template,
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
        kept_groups: collections.Counter[int] = collections.Counter()
        for (record, age, age_group), crop in zip(usable, crops):
            if crop.image is None:
                skipped.append({"file": record.file_name, "reason": crop.reason or "unknown"})
                continue
            kept_groups[age_group] += 1
            yield record.file_name, {
                "image": _encode_jpeg(crop.image),
                "age": age,
                "age_group": age_group,
                "file_name": record.file_name,
                **extra_fields(record),
            }
        self._kept_by_split[split_name] = kept_groups
        self._skipped_by_split[split_name] = skipped
        if not kept_groups:  # TFDS would stop with an assertion, and delete the report with the build
            listed = "; ".join(f"{entry['file']}: {entry['reason']}" for entry in skipped[:5])
            raise ValueError(f"{self.name} {split_name}: none of its {len(records)} image(s) is usable "
                             f"({listed}{'; ...' if len(skipped) > 5 else ''})")
        self._write_report(split_name)

    def _write_report(self, split_name: str) -> None:
        config = self.builder_config
        report_path = epath.Path(self.data_dir) / REPORT_FILE_NAME
        labels = age_group_labels(config.age_group_boundaries, config.min_age)
        report = {
            "dataset": f"{self.name}/{config.name}/{self.version}",
            "manual_dirs": self._source_dirs,
            "split": {"by": self._split_by_used, "test_fraction": config.test_fraction,
                      "seed": config.split_seed},
            "aligned": {"align_faces": config.align_faces, "template": config.alignment_template,
                        "size": config.aligned_size},
            "splits": {
                name: {
                    "examples": sum(self._kept_by_split[name].values()),
                    "examples_per_age_group": {
                        label: self._kept_by_split[name][group] for group, label in enumerate(labels)},
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
            f"{self.name} {split_name}: kept {sum(self._kept_by_split[split_name].values())} images, "
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
    if age > MAX_LABELLED_AGE:
        raise ValueError(f"age {int(age)} above the oldest plausible age {MAX_LABELLED_AGE}")
    return int(age)
