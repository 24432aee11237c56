"""Packs the faces a config reads into arrays that the numpy backend reads without TF.

  python -m ipcgan_jax.data.pack --config=configs/age_classifier.py --out=/data/packed/cacd

writes the config's data.train_split and data.test_split (or --splits) as decoded uint8
images and labels (see `ipcgan_jax.data.packed`); this step needs TensorFlow to read a
built TFDS dataset. Then train anywhere, TensorFlow or not, with
  --config.data.packed_path=/data/packed/cacd --config.data.backend=numpy

To carry faces to a machine with little room for them (the GPU lease of
launch/gpu_check.sh), three options shrink a pack: --image_size=N stores every image
resized to N x N by TF1's legacy bilinear resize (the pipeline's own resize, so a run at
image_size N reads the same pixels, rounded to uint8), --jpeg_quality=Q stores JPEG files
of quality Q instead of decoded pixels (lossy; about 4.6 KB for a 128 x 128 face at 90),
and --max_per_group=K keeps at most K images of each age group (a seeded random choice,
--seed, in the split's order).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import ml_collections
from absl import app, flags
from ml_collections import config_flags

import numpy as np

from ipcgan_jax.data import legacy_resize, packed, sources

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file whose data fields name the faces.")
flags.DEFINE_string("out", None, "Packed path: one folder per split is written under it.")
flags.DEFINE_list("splits", None, "Splits to pack (default: data.train_split, data.test_split).")
flags.DEFINE_integer("image_size", 0, "Store images resized to this square size (0 = as stored).")
flags.DEFINE_integer("jpeg_quality", 0, "Store JPEG files of this quality, 1..100 (0 = decoded pixels).")
flags.DEFINE_integer("max_per_group", 0, "Keep at most this many images per age group (0 = all).")
flags.DEFINE_integer("seed", 0, "Seed of the --max_per_group choice.")
flags.mark_flags_as_required(["config", "out"])


def balanced_choice(age_group: np.ndarray, max_per_group: int, seed: int) -> np.ndarray:
    """Ascending indices keeping at most `max_per_group` images of each age group (all
    when 0), chosen at random with `seed`."""
    if max_per_group <= 0:
        return np.arange(len(age_group))
    rng = np.random.default_rng(seed)
    kept = [rng.choice(members, max_per_group, replace=False) if len(members) > max_per_group else members
            for members in (np.flatnonzero(age_group == group) for group in np.unique(age_group))]
    return np.sort(np.concatenate(kept))


def _resized_fetcher(faces: sources.FaceSource, kept: np.ndarray, image_size: int
                     ) -> Callable[[np.ndarray], np.ndarray]:
    """indices into `kept` -> those faces' uint8 images, resized to image_size (0: as stored)."""
    def fetch_images(indices: np.ndarray) -> np.ndarray:
        images = faces.images(kept[indices])
        if not image_size or images.shape[1:3] == (image_size, image_size):
            return images
        return np.clip(np.round(legacy_resize.resize_uint8(images, image_size)), 0, 255).astype(np.uint8)
    return fetch_images


def pack_splits(data_config: ml_collections.ConfigDict, splits: Sequence[str], out: str, *,
                image_size: int = 0, jpeg_quality: int = 0, max_per_group: int = 0, seed: int = 0
                ) -> list[str]:
    """Writes each split of the faces `data_config` names (read from the dataset itself,
    whatever its packed_path) under `out`; returns the folders. image_size, jpeg_quality,
    max_per_group and seed shrink the pack (module doc); their values are recorded in
    each split's metadata."""
    if image_size < 0:
        raise ValueError(f"image_size is {image_size}; expected a size in pixels, or 0 for as stored")
    if max_per_group < 0:
        raise ValueError(f"max_per_group is {max_per_group}; expected a count, or 0 for all")
    packed.check_jpeg_quality(jpeg_quality)
    data = ml_collections.ConfigDict(data_config.to_dict())
    data.packed_path = ""
    recorded = {key: value for key, value in data.to_dict().items()
                if isinstance(value, (str, int, float, bool))}
    shrink = {"image_size": image_size, "max_per_group": max_per_group, "seed": seed}
    # Every split checked and opened before any is written: a bad one leaves no partial pack.
    for split in splits:
        packed.check_new_split(out, split)
    faces_of_split = {split: sources.load_faces(data, split) for split in splits}
    folders = []
    for split, faces in faces_of_split.items():
        kept = balanced_choice(faces.age_group, max_per_group, seed)
        folders.append(packed.write_split(
            out, split, fetch_images=_resized_fetcher(faces, kept, image_size),
            labels={"age_group": faces.age_group[kept], "identity": faces.identity[kept], "age": faces.age[kept]},
            identity_names=faces.identity_names, jpeg_quality=jpeg_quality,
            metadata={"dataset": data.name, "source": faces.name, "data_config": recorded,
                      "packed_from": {"count": len(faces), **shrink}}))
    return folders


def main(argv: Sequence[str]) -> None:
    del argv
    data = FLAGS.config.get("data")
    if data is None:
        raise app.UsageError(f"config {FLAGS['config'].value!r} has no 'data' fields")
    splits = FLAGS.splits or list(dict.fromkeys([data.train_split, data.test_split]))
    try:
        folders = pack_splits(data, splits, FLAGS.out, image_size=FLAGS.image_size,
                              jpeg_quality=FLAGS.jpeg_quality, max_per_group=FLAGS.max_per_group,
                              seed=FLAGS.seed)
    except (ValueError, FileExistsError, FileNotFoundError) as error:  # the message names the cause
        raise SystemExit(f"error: {error}") from None
    for folder in folders:
        print(f"packed {folder}")
    print(f"read them with --config.data.packed_path={FLAGS.out} (any backend; "
          f"--config.data.backend=numpy needs no TensorFlow)")


if __name__ == "__main__":
    app.run(main)
