"""ImageNet AlexNet weights, `bvlc_alexnet.npy` (the Caffe model ported to TensorFlow)."""
from __future__ import annotations

import logging
import os
import pickle
from typing import Any

import numpy as np

from ipcgan_jax.constants import BVLC_ALEXNET_LAYERS
from ipcgan_jax.weights.mismatch import CheckpointMismatchError, mismatch_message
from ipcgan_jax.weights.templates import Variables, alexnet_variables_template

logger = logging.getLogger(__name__)


def load_bvlc_alexnet(path: str, *, expect: Variables | None = None) -> dict[str, Any]:
    """ImageNet AlexNet (`bvlc_alexnet.npy`) -> params {conv1..conv5, fc6, fc7}.

    The file is a pickled dict layer -> [weights, biases]; fc8 (the 1000 ImageNet
    classes) and any other layer are ignored and logged. Shapes are checked against
    `expect` (an AlexNet variables template; faithful by default); conv2/4/5 keep their
    grouped layout (k, k, in/2, out), which is Flax's `feature_group_count=2` kernel.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"bvlc AlexNet weights not found: {path}")
    try:
        layers = np.load(path, allow_pickle=True, encoding="latin1").item()
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(f"{path}: not a pickled numpy dict of AlexNet layers: {error}") from None
    if not isinstance(layers, dict):
        raise ValueError(f"{path}: expected a dict layer -> [weights, biases], got {type(layers).__name__}")
    template = (expect or alexnet_variables_template())["params"]

    params, missing, misshaped = {}, [], []
    for layer in BVLC_ALEXNET_LAYERS:
        if layer not in layers:
            missing.append(layer)
            continue
        try:
            arrays = [np.asarray(a) for a in layers[layer]]
        except TypeError:  # not a sequence of arrays
            raise ValueError(f"{path}: layer {layer!r} should hold [weights, biases], "
                             f"got {type(layers[layer]).__name__}") from None
        # the Caffe->TF port stores [weights, biases]; tell them apart by rank as it did
        biases = [a for a in arrays if a.ndim == 1]
        weights = [a for a in arrays if a.ndim > 1]
        if len(biases) != 1 or len(weights) != 1:
            raise ValueError(f"{path}: layer {layer!r} should hold [weights, biases], "
                             f"got shapes {[a.shape for a in arrays]}")
        for leaf, array in (("kernel", weights[0]), ("bias", biases[0])):
            expected = tuple(template[layer][leaf].shape)
            if array.shape != expected:
                misshaped.append((f"{layer}/{leaf}", array.shape, expected))
            params.setdefault(layer, {})[leaf] = array.astype(np.float32)
    if missing or misshaped:
        raise CheckpointMismatchError(mismatch_message(
            path, "layers do not match the AlexNet", missing=missing, misshaped=misshaped))
    ignored = sorted(set(layers) - set(BVLC_ALEXNET_LAYERS))
    logger.info("%s: loaded %d layers, ignored %d (%s)", path, len(params), len(ignored), ", ".join(ignored))
    return params
