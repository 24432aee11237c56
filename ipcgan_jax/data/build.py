"""Builds a face dataset with TFDS (aligned crops in array_record files).

  python -m ipcgan_jax.data.build cacd --manual_dir=/data/cacd --data_dir=~/tensorflow_datasets
  python -m ipcgan_jax.data.build image_folder --manual_dir=/data/utkface --config=prealigned
  python -m ipcgan_jax.data.build image_folder --config=utkface --manual_dir=/data/utk_a,/data/utk_b
  python -m ipcgan_jax.data.build synthetic_aging --config=small_64

cacd: `manual_dir` holds `CACD2000/` and `celebrity2000_meta.mat`. image_folder:
`manual_dir` holds the images and a CSV (columns path, age, optional identity); several
folders, comma-separated, build into one dataset.
Overriding a setting (e.g. --aligned_size=256) builds a config of its own name, so
datasets built with different settings never overwrite each other. Skipped images are
listed in build_report.json beside the dataset.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import tensorflow_datasets as tfds

from ipcgan_jax.data.face_builder import REPORT_FILE_NAME
from ipcgan_jax.data.sources import TFDS_BUILDERS, tfds_builder_class
from ipcgan_jax.data.synthetic_tfds import SyntheticAgingConfig

_OVERRIDABLE = ("aligned_size", "test_fraction", "split_seed", "csv_name", "min_age")
_SYNTHETIC_SETTINGS = ("num_identities", "images_per_identity", "size", "seed", "test_fraction")


def make_builder(dataset: str, *, data_dir: str | None = None, config: str | None = None,
                 num_workers: int | None = None, manual_dirs: list[str] | None = None,
                 **overrides) -> tfds.core.DatasetBuilder:
    """The TFDS builder of `dataset` with `config` (default: the builder's) and overrides;
    `manual_dirs`: several folders to build into one dataset (cacd, image_folder)."""
    if dataset not in TFDS_BUILDERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(TFDS_BUILDERS)}")
    cls = tfds_builder_class(dataset)
    configs = {c.name: c for c in cls.BUILDER_CONFIGS}
    name = config or getattr(cls, "DEFAULT_CONFIG_NAME", None) or cls.BUILDER_CONFIGS[0].name
    if name not in configs:
        raise ValueError(f"unknown config {name!r} for {dataset}; choose from {sorted(configs)}")
    builder_config = configs[name]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    for key in overrides:
        if not hasattr(builder_config, key):
            raise ValueError(f"--{key} does not apply to {dataset} (config {name!r})")
    if overrides:
        suffix = "_".join(f"{k}{v}" for k, v in sorted(overrides.items()))
        new_name = f"{name}_{suffix}"
        if isinstance(builder_config, SyntheticAgingConfig):  # settings set in __init__, not fields
            settings = {k: getattr(builder_config, k) for k in _SYNTHETIC_SETTINGS}
            builder_config = SyntheticAgingConfig(name=new_name, **{**settings, **overrides})
        else:
            builder_config = dataclasses.replace(builder_config, name=new_name, **overrides)
    kwargs = {"data_dir": os.path.expanduser(data_dir) if data_dir else None, "config": builder_config,
              "file_format": "array_record"}  # random access for the training pipeline
    if num_workers is not None and dataset != "synthetic_aging":
        kwargs["num_workers"] = num_workers
    if manual_dirs and dataset != "synthetic_aging":
        kwargs["manual_dirs"] = manual_dirs
    return cls(**kwargs)


def _built_from(data_dir: str) -> list[str]:
    """The source folders a face dataset's build report records ([] when it records none)."""
    report_path = os.path.join(data_dir, REPORT_FILE_NAME)
    if not os.path.isfile(report_path):
        return []
    with open(report_path) as f:
        return list(json.load(f).get("manual_dirs") or [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("dataset", choices=sorted(TFDS_BUILDERS))
    parser.add_argument("--manual_dir", help="folder with the raw images (cacd, image_folder); "
                        "several, comma-separated, build into one dataset")
    parser.add_argument("--data_dir", help="TFDS data dir (default: ~/tensorflow_datasets)")
    parser.add_argument("--config", help="builder config name")
    parser.add_argument("--num_workers", type=int, help="alignment processes (default: every core)")
    parser.add_argument("--aligned_size", type=int)
    parser.add_argument("--test_fraction", type=float)
    parser.add_argument("--split_seed", type=int)
    parser.add_argument("--csv_name")
    parser.add_argument("--min_age", type=int)
    args = parser.parse_args(argv)
    if args.dataset != "synthetic_aging" and not args.manual_dir:
        parser.error(f"{args.dataset} needs --manual_dir")
    manual_dirs = [os.path.abspath(os.path.expanduser(d)) for d in args.manual_dir.split(",")] if args.manual_dir else []
    for manual_dir in manual_dirs:
        if not os.path.isdir(manual_dir):
            parser.error(f"--manual_dir {manual_dir!r} is not a folder")
        if not os.listdir(manual_dir):
            parser.error(f"--manual_dir {manual_dir!r} is empty")
    try:
        builder = make_builder(args.dataset, data_dir=args.data_dir, config=args.config,
                               num_workers=args.num_workers,
                               manual_dirs=manual_dirs if len(manual_dirs) > 1 else None,
                               **{k: getattr(args, k) for k in _OVERRIDABLE})
    except ValueError as e:
        parser.error(str(e))
    if builder.is_prepared():
        built_from = _built_from(builder.data_dir)
        name = f"{builder.name}/{builder.builder_config.name}"
        if manual_dirs and built_from and built_from != manual_dirs:
            print(f"error: {builder.data_dir} already holds {name}, built from {', '.join(built_from)}; nothing "
                  f"was read from {', '.join(manual_dirs)}: choose another --data_dir, or delete that folder "
                  "to rebuild", file=sys.stderr)
            return 1
        if manual_dirs and not built_from:  # built before the report recorded its folders
            print(f"warning: {builder.data_dir} already holds {name}, built from folders its report does not "
                  f"record; nothing was read from {', '.join(manual_dirs)} (delete that folder to rebuild)",
                  file=sys.stderr)
        print(f"{name} is built already in {builder.data_dir}: nothing to do (delete that folder to rebuild it)")
    else:
        download_config = tfds.download.DownloadConfig(manual_dir=manual_dirs[0] if manual_dirs else None)
        try:
            builder.download_and_prepare(download_config=download_config)
        except (ValueError, FileNotFoundError) as error:  # bad metadata or settings: the message names it
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"built {builder.name}/{builder.builder_config.name} in {builder.data_dir}")
    for split, info in builder.info.splits.items():
        print(f"  {split}: {info.num_examples} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
