"""TFDS builder for the synthetic aging faces of `ipcgan_jax.data.synthetic`, built offline.

Kept apart from synthetic.py so that the numpy generator never imports TensorFlow.
Splits are identity-disjoint: a seeded `test_fraction` of the identities goes to "test".

    builder = SyntheticAging(config=SyntheticAgingConfig(name="tiny", num_identities=10,
                             images_per_identity=5, size=64), data_dir="/tmp/tfds")
    builder.download_and_prepare()
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from ipcgan_jax.constants import AGE_GROUP_LABELS
from ipcgan_jax.data import synthetic

VERSION = "1.1.0"
_RENDER_BATCH = 256


class SyntheticAgingConfig(tfds.core.BuilderConfig):
    """How many identities/images to draw, at what size, from which seed."""

    def __init__(self, *, num_identities: int = 500, images_per_identity: int = 10, size: int = 128,
                 seed: int = 0, test_fraction: float = 0.2, **kwargs):
        kwargs.setdefault("version", VERSION)
        kwargs.setdefault("description", f"{num_identities} identities x {images_per_identity} images, "
                                         f"{size}x{size}, seed {seed}, test fraction {test_fraction}")
        super().__init__(**kwargs)
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        if num_identities < 2:
            raise ValueError(f"num_identities must be >= 2 for two identity-disjoint splits, got {num_identities}")
        self.num_identities = num_identities
        self.images_per_identity = images_per_identity
        self.size = size
        self.seed = seed
        self.test_fraction = test_fraction


def split_identities(num_identities: int, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Sorted identity indices of the train and test splits (disjoint, both non-empty)."""
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x5B17])).permutation(num_identities)
    num_test = min(max(1, math.ceil(test_fraction * num_identities)), num_identities - 1)
    return {"train": np.sort(order[num_test:]), "test": np.sort(order[:num_test])}


class SyntheticAging(tfds.core.GeneratorBasedBuilder):
    """Procedural faces with known identity and age group (see ipcgan_jax.data.synthetic)."""

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {"1.0.0": "First release.",
                     "1.1.0": "Even steps between adjacent age groups (synthetic.AGE_ATTRIBUTES)."}
    BUILDER_CONFIGS = [
        SyntheticAgingConfig(name="default"),
        SyntheticAgingConfig(name="small_64", num_identities=200, images_per_identity=10, size=64),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.size
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(size, size, 3)),
                "age": tfds.features.Scalar(dtype=np.int32),
                "age_group": tfds.features.ClassLabel(names=AGE_GROUP_LABELS),
                "identity": tfds.features.Scalar(dtype=np.int32),
            }),
            supervised_keys=("image", "age_group"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # everything is drawn offline
        config = self.builder_config
        splits = split_identities(config.num_identities, config.test_fraction, config.seed)
        return {name: self._generate_examples(identities) for name, identities in splits.items()}

    def _generate_examples(self, identity_indices: np.ndarray) -> Iterator[tuple[str, dict]]:
        config = self.builder_config
        identities = synthetic.sample_identities(config.num_identities, config.seed)
        plan = synthetic.plan_dataset(config.num_identities, config.images_per_identity, seed=config.seed)
        rows = np.flatnonzero(np.isin(plan["identity"], identity_indices))
        for start in range(0, len(rows), _RENDER_BATCH):
            batch = rows[start:start + _RENDER_BATCH]
            images = synthetic.render_faces(
                identities.take(plan["identity"][batch]), plan["age_group"][batch],
                size=config.size, nuisance_seed=plan["nuisance_seed"][batch])
            for row, image in zip(batch, images):
                yield f"{row:09d}", {
                    "image": image,
                    "age": int(plan["age"][row]),
                    "age_group": int(plan["age_group"][row]),
                    "identity": int(plan["identity"][row]),
                }
