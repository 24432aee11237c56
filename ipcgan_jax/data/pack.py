"""Packs the faces a config reads into arrays that the numpy backend reads without TF.

  python -m ipcgan_jax.data.pack --config=configs/age_classifier.py --out=/data/packed/cacd

writes the config's data.train_split and data.test_split (or --splits) as decoded uint8
images and labels (see `ipcgan_jax.data.packed`); this step needs TensorFlow to read a
built TFDS dataset. Then train anywhere, TensorFlow or not, with
  --config.data.packed_path=/data/packed/cacd --config.data.backend=numpy
"""
from __future__ import annotations

from collections.abc import Sequence

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from ipcgan_jax.data import packed, sources

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file whose data fields name the faces.")
flags.DEFINE_string("out", None, "Packed path: one folder per split is written under it.")
flags.DEFINE_list("splits", None, "Splits to pack (default: data.train_split, data.test_split).")
flags.mark_flags_as_required(["config", "out"])


def pack_splits(data_config: ml_collections.ConfigDict, splits: Sequence[str], out: str
                ) -> list[str]:
    """Writes each split of the faces `data_config` names (read from the dataset itself,
    whatever its packed_path) under `out`; returns the folders."""
    data = ml_collections.ConfigDict(data_config.to_dict())
    data.packed_path = ""
    recorded = {key: value for key, value in data.to_dict().items()
                if isinstance(value, (str, int, float, bool))}
    folders = []
    for split in splits:
        faces = sources.load_faces(data, split)
        folders.append(packed.write_split(
            out, split, fetch_images=faces.images,
            labels={"age_group": faces.age_group, "identity": faces.identity, "age": faces.age},
            identity_names=faces.identity_names,
            metadata={"dataset": data.name, "source": faces.name, "data_config": recorded}))
    return folders


def main(argv: Sequence[str]) -> None:
    del argv
    data = FLAGS.config.get("data")
    if data is None:
        raise app.UsageError(f"config {FLAGS['config'].value!r} has no 'data' fields")
    splits = FLAGS.splits or list(dict.fromkeys([data.train_split, data.test_split]))
    for folder in pack_splits(data, splits, FLAGS.out):
        print(f"packed {folder}")
    print(f"read them with --config.data.packed_path={FLAGS.out} (any backend; "
          f"--config.data.backend=numpy needs no TensorFlow)")


if __name__ == "__main__":
    app.run(main)
