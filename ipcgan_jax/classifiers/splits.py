"""The faces a classifier task trains and tests on: the configured splits, or for the
identity task a per-image held-out part of the training split (identity accuracy needs
faces of identities seen in training)."""
from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
import numpy as np

from ipcgan_jax.data import sources


def subset(source, indices: np.ndarray, name: str):
    """The faces of `source` at `indices`, as a FaceSource of their own."""
    indices = np.asarray(indices, np.int64)
    fetch_encoded = source.fetch_encoded
    return dataclasses.replace(
        source, name=name, age_group=source.age_group[indices], identity=source.identity[indices],
        age=source.age[indices], fetch_images=lambda i: source.fetch_images(indices[np.asarray(i)]),
        fetch_encoded=(None if fetch_encoded is None
                       else lambda i: fetch_encoded(indices[np.asarray(i)])))


def per_image_holdout(identity: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, holdout) indices: round(fraction * n) of each identity's n images, seeded,
    held out, but never all of them (every identity keeps at least one training image)."""
    rng = np.random.default_rng([seed, 0x1D])
    train, holdout = [], []
    for value in np.unique(identity):
        indices = rng.permutation(np.flatnonzero(identity == value))
        num_held = min(int(round(fraction * indices.size)), indices.size - 1)
        holdout.append(indices[:num_held])
        train.append(indices[num_held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(holdout))


def train_and_test_faces(config: ml_collections.ConfigDict, faces: tuple[Any, Any] | None) -> tuple[Any, Any]:
    """(train faces, test faces) of `config.task`: `faces` if given (its test part unused
    by 'alexnet_identity'), else config.data's train and test splits."""
    if faces is not None:
        train_faces = faces[0]
    else:
        train_faces = sources.load_faces(config.data, config.data.train_split)
    if config.task != "alexnet_identity":
        test_faces = faces[1] if faces is not None else sources.load_faces(config.data, config.data.test_split)
        return train_faces, test_faces
    train_idx, holdout_idx = per_image_holdout(train_faces.identity, config.holdout_fraction, config.seed)
    if holdout_idx.size == 0:
        raise ValueError(f"{train_faces.name}: holdout_fraction {config.holdout_fraction} holds out no "
                         "image (identities have too few images); raise it")
    return (subset(train_faces, train_idx, f"{train_faces.name} (training images)"),
            subset(train_faces, holdout_idx, f"{train_faces.name} (held-out images)"))
