"""Random-access faces of one split: the input of every pipeline in `pipeline.py`.

A `FaceSource` holds the per-image labels (`age_group`, `identity`, `age`) as numpy
arrays, loaded eagerly because the index plans need them, and fetches images by index:
from memory for array sources, lazily from TFDS array_record files for built datasets
(so a 163k-image CACD split never has to fit in memory).
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from ipcgan_jax.constants import NUM_AGE_GROUPS
from ipcgan_jax.data import packed, synthetic

# Dataset name -> (module, class) of its TFDS builder, for `load_faces` and the build CLI.
# Imported when first used, so that reading one dataset never imports the code of the
# others (alignment, dlib).
TFDS_BUILDERS = {
    "cacd": ("ipcgan_jax.data.cacd", "Cacd"),
    "image_folder": ("ipcgan_jax.data.image_folder", "ImageFolder"),
    "synthetic_aging": ("ipcgan_jax.data.synthetic_tfds", "SyntheticAging"),
}
_IN_MEMORY_NAMES = ("synthetic",)


def _as_label_array(values: Any, field: str, length: int, origin: str) -> np.ndarray:
    array = np.asarray(values)
    if array.shape != (length,):
        raise ValueError(
            f"{origin}: field '{field}' has shape {array.shape}, expected ({length},)"
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{origin}: field '{field}' must be integer, got {array.dtype}")
    return array.astype(np.int64)


def _check_age_groups(age_group: np.ndarray, origin: str) -> None:
    bad = (age_group < 0) | (age_group >= NUM_AGE_GROUPS)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{origin}: field 'age_group' must be in 0..{NUM_AGE_GROUPS - 1}; "
            f"image {first} has {int(age_group[first])}"
        )


@dataclasses.dataclass(frozen=True, eq=False)
class FaceSource:
    """Faces of one split with random access by index.

    Attributes:
      name: where the faces come from, for messages (e.g. "cacd:train").
      age_group, identity, age: (N,) int64 labels, one per image.
      fetch_images: indices (k,) int -> uint8 (k, H, W, 3).
      identity_names: for datasets whose identities are strings (image folders), the
        name of each identity code; code -1 marks an image without identity.
      fetch_encoded: for stored datasets, indices (k,) -> object array of the encoded
        (JPEG/PNG) files, so that pipelines decode them in TF's threads with
        `decode_images`, exactly as `images` does.
    """

    name: str
    age_group: np.ndarray
    identity: np.ndarray
    age: np.ndarray
    fetch_images: Callable[[np.ndarray], np.ndarray] = dataclasses.field(repr=False)
    identity_names: tuple[str, ...] | None = None
    fetch_encoded: Callable[[np.ndarray], np.ndarray] | None = dataclasses.field(
        default=None, repr=False)

    def __len__(self) -> int:
        return int(self.age_group.shape[0])

    def images(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 (k, H, W, 3) images at `indices` (any order, repeats allowed)."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(
                f"{self.name}: image index out of range 0..{len(self) - 1}: "
                f"{int(indices.min())}..{int(indices.max())}"
            )
        return self.fetch_images(indices)

    def indices_of_group(self, age_group: int) -> np.ndarray:
        """Image indices of one age group, ascending; error if there are none."""
        indices = np.flatnonzero(self.age_group == age_group)
        if indices.size == 0:
            raise ValueError(f"{self.name}: no images in age group {age_group}")
        return indices

    def indices_of_groups(self, age_groups: Sequence[int]) -> np.ndarray:
        """Image indices whose age group is one of `age_groups` (e.g. a run's source
        groups), ascending; empty if there are none."""
        return np.flatnonzero(np.isin(self.age_group, tuple(age_groups)))

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], name: str = "arrays") -> FaceSource:
        """In-memory faces from a dict with image (N,H,W,3) uint8, age_group, identity,
        and optionally age (N,) (e.g. `ipcgan_jax.data.synthetic.make_dataset`)."""
        for field in ("image", "age_group", "identity"):
            if field not in arrays:
                raise KeyError(f"{name}: missing field '{field}'")
        images = np.asarray(arrays["image"])
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"{name}: field 'image' must be uint8 (N, H, W, 3), "
                f"got {images.dtype} {images.shape}"
            )
        length = images.shape[0]
        age_group = _as_label_array(arrays["age_group"], "age_group", length, name)
        _check_age_groups(age_group, name)
        identity = _as_label_array(arrays["identity"], "identity", length, name)
        age = (
            _as_label_array(arrays["age"], "age", length, name)
            if "age" in arrays
            else np.full(length, -1, np.int64)
        )
        return cls(
            name=name,
            age_group=age_group,
            identity=identity,
            age=age,
            # np.take copies whole images; fancy indexing is ~10x slower on (N, H, W, 3).
            fetch_images=lambda indices: np.take(images, indices, axis=0),
        )

    @classmethod
    def from_tfds(
        cls,
        builder: str | type,
        split: str,
        data_dir: str | None,
        builder_config: str | Any | None = None,
    ) -> FaceSource:
        """Faces of a built TFDS dataset (array_record) read by random access.

        builder: a builder name ("cacd", ...) or a builder class; data_dir None means
        the TFDS default; builder_config a config name or object. The labels are read
        once (with a progress bar); images are read and decoded on demand.
        """
        import tensorflow as tf
        import tensorflow_datasets as tfds

        kwargs: dict[str, Any] = {}
        if data_dir is not None:
            kwargs["data_dir"] = data_dir
        if builder_config is not None:
            kwargs["config"] = builder_config
        if isinstance(builder, str) and builder in TFDS_BUILDERS:
            builder = tfds_builder_class(builder)
        if isinstance(builder, str):
            dataset_builder = tfds.builder(builder, **kwargs)
        else:
            dataset_builder = builder(**kwargs)
        name = f"{dataset_builder.name}:{split}"
        if not dataset_builder.is_prepared():
            raise FileNotFoundError(
                f"{name}: dataset not built under data_dir={data_dir!r} "
                f"(looked in {dataset_builder.data_dir}; build it first)"
            )
        missing = {"image", "age", "age_group", "identity"} - set(dataset_builder.info.features)
        if missing:
            raise ValueError(f"{name}: the dataset lacks feature(s) {sorted(missing)}")
        # Images stay encoded here; `images` and the pipelines decode them with TF.
        label_records = dataset_builder.as_data_source(
            split=split, decoders={"image": tfds.decode.SkipDecoding()}
        )
        length = len(label_records)
        age_group = np.empty(length, np.int64)
        age = np.empty(length, np.int64)
        identity_values: list[Any] = []
        chunk = 1024
        with tqdm(total=length, desc=f"labels of {name}", unit="img") as progress:
            for start in range(0, length, chunk):
                keys = list(range(start, min(start + chunk, length)))
                for key, example in zip(keys, label_records.__getitems__(keys)):
                    age_group[key] = example["age_group"]
                    age[key] = example["age"]
                    identity_values.append(example["identity"])
                progress.update(len(keys))
        _check_age_groups(age_group, name)
        identity, identity_names = _identity_codes(identity_values)

        def fetch_encoded(indices: np.ndarray) -> np.ndarray:
            examples = label_records.__getitems__([int(i) for i in indices])
            encoded = np.empty(len(examples), object)
            encoded[:] = [example["image"] for example in examples]
            return encoded

        def fetch_images(indices: np.ndarray) -> np.ndarray:
            images = [decode_images(tf.constant([encoded]))[0].numpy()
                      for encoded in fetch_encoded(indices)]
            shapes = {image.shape for image in images}
            if len(shapes) > 1:
                raise ValueError(
                    f"{name}: images of one batch differ in size {sorted(shapes)}; "
                    f"build the dataset at one stored size"
                )
            return np.stack(images)

        return cls(name=name, age_group=age_group, identity=identity, age=age,
                   fetch_images=fetch_images, identity_names=identity_names,
                   fetch_encoded=fetch_encoded)


def decode_images(encoded: Any) -> Any:
    """Encoded image files, a (k,) tf.string tensor -> uint8 (k, H, W, 3) tensor.

    TF's decoders, used both by `FaceSource.images` and inside tf.data maps so that the
    two give identical pixels (PIL's JPEG decoder differs from TF's by a few levels).
    All k images must have one size.
    """
    import tensorflow as tf

    return tf.map_fn(
        lambda data: tf.io.decode_image(data, channels=3, expand_animations=False),
        encoded,
        fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
    )


def _identity_codes(values: Sequence[Any]) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Integer identities as they are; string identities (image folders) as codes into
    their sorted names, with -1 for an empty (unknown) identity."""
    if not values or not isinstance(values[0], (bytes, str)):
        return np.asarray(values, np.int64).reshape(-1), None
    names = [v.decode("utf-8") if isinstance(v, bytes) else v for v in values]
    known = sorted(set(names) - {""})
    code_of = {identity_name: code for code, identity_name in enumerate(known)}
    codes = np.array([code_of.get(identity_name, -1) for identity_name in names], np.int64)
    return codes, tuple(known)


def identity_disjoint_split(
    identity: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) image indices with no identity in both; a seeded random
    `test_fraction` of the identities (at least one, at most all but one) is held out."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    identities = np.unique(identity)
    if identities.size < 2:
        raise ValueError("an identity-disjoint split needs at least 2 identities")
    num_test = int(np.clip(round(test_fraction * identities.size), 1, identities.size - 1))
    shuffled = np.random.default_rng([seed, identities.size]).permutation(identities)
    is_test = np.isin(identity, shuffled[:num_test])
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _config_field(data_config: Any, field: str) -> Any:
    value = data_config.get(field) if hasattr(data_config, "get") else getattr(
        data_config, field, None)
    if value is None:
        raise ValueError(f"data config field '{field}' is required for "
                         f"dataset '{data_config.name}'")
    return value


def _optional_field(data_config: Any, field: str) -> str | None:
    """A string field where '' or absence means "the default" (None)."""
    value = data_config.get(field) if hasattr(data_config, "get") else getattr(
        data_config, field, None)
    return str(value) if value else None


@functools.lru_cache(maxsize=1)
def synthetic_arrays(num_identities: int, images_per_identity: int, size: int, seed: int
                     ) -> dict[str, np.ndarray]:
    """`synthetic.make_dataset`'s arrays, read-only, cached for the process (the last set;
    `synthetic_arrays.cache_clear()` drops it): rendering takes seconds per thousand faces
    and the demo's four runs and both splits read the same set."""
    arrays = synthetic.make_dataset(num_identities, images_per_identity, size=size, seed=seed)
    for value in arrays.values():
        value.flags.writeable = False
    return arrays


def _load_synthetic(data_config: Any, split: str) -> FaceSource:
    if split not in ("train", "test"):
        raise ValueError(
            f"data config: the 'synthetic' dataset has splits 'train' and 'test', got {split!r}")
    num_identities = int(_config_field(data_config, "num_identities"))
    images_per_identity = int(_config_field(data_config, "images_per_identity"))
    size = int(_config_field(data_config, "size"))
    seed = int(_config_field(data_config, "seed"))
    test_fraction = float(_config_field(data_config, "test_fraction"))
    arrays = synthetic_arrays(num_identities, images_per_identity, size, seed)
    train, test = identity_disjoint_split(np.asarray(arrays["identity"]), test_fraction, seed)
    chosen = train if split == "train" else test
    return FaceSource.from_arrays(
        {key: np.asarray(value)[chosen] for key, value in arrays.items()
         if key in ("image", "age_group", "identity", "age")},
        name=f"synthetic:{split}",
    )


def tfds_builder_class(name: str) -> type:
    """The TFDS builder class of dataset `name` (a key of `TFDS_BUILDERS`)."""
    module_name, class_name = TFDS_BUILDERS[name]
    return getattr(importlib.import_module(module_name), class_name)


def load_faces(data_config: Any, split: str) -> FaceSource:
    """The faces of `split` for an ml_collections `data_config`.

    data_config.name: 'synthetic' (generated in memory: num_identities,
    images_per_identity, size, seed, test_fraction; splits 'train'/'test', disjoint in
    identity) or a TFDS builder 'cacd' | 'image_folder' | 'synthetic_aging' read from
    data_config.data_dir with data_config.builder_config ('' or absent: the TFDS default
    data_dir / the builder's default config). A non-empty data_config.packed_path reads
    the split packed from that dataset instead, without TensorFlow (`data.packed`).
    """
    name = data_config.get("name") if hasattr(data_config, "get") else getattr(
        data_config, "name", None)
    packed_path = _optional_field(data_config, "packed_path")
    if packed_path:
        packed_split = packed.read_split(packed_path, split, dataset=name)
        return dataclasses.replace(FaceSource.from_arrays(packed_split.arrays, packed_split.name),
                                   identity_names=packed_split.identity_names)
    if name in _IN_MEMORY_NAMES:
        return _load_synthetic(data_config, split)
    if name not in TFDS_BUILDERS:
        known = ", ".join(repr(n) for n in (*_IN_MEMORY_NAMES, *TFDS_BUILDERS))
        raise ValueError(f"data config field 'name' is {name!r}; expected one of {known}")
    builder_class = tfds_builder_class(name)
    return FaceSource.from_tfds(builder_class, split, _optional_field(data_config, "data_dir"),
                                _optional_field(data_config, "builder_config"))
