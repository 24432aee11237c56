"""Reading TF1 name-based checkpoints (the official IPCGAN's `*.model-<step>` files).

This is the only place the weight import touches TensorFlow; it is imported lazily so
that importing this module (or `ipcgan_jax.weights.tf1`) does not load TensorFlow.
"""
from __future__ import annotations

import os

import numpy as np


def _open_reader(checkpoint: str):
    import tensorflow as tf  # lazy: TensorFlow is only needed to read the original files

    try:
        return tf.train.load_checkpoint(os.fspath(checkpoint))
    except (ValueError, tf.errors.OpError) as error:
        raise FileNotFoundError(
            f"cannot read TF1 checkpoint {checkpoint!r} (give the prefix, e.g. "
            f"'.../acgan.model-399999', or a directory with a 'checkpoint' file): {error}") from error


def list_tf1_variables(checkpoint: str) -> dict[str, tuple[int, ...]]:
    """Variable name -> shape of every tensor stored in a TF1 checkpoint."""
    reader = _open_reader(checkpoint)
    return {name: tuple(int(d) for d in shape)
            for name, shape in reader.get_variable_to_shape_map().items()}


def read_tf1_tensors(checkpoint: str, names: list[str]) -> dict[str, np.ndarray]:
    """The named tensors of a TF1 checkpoint as numpy arrays."""
    reader = _open_reader(checkpoint)
    return {name: np.asarray(reader.get_tensor(name)) for name in names}
