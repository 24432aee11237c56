"""pytorch-fid's InceptionV3 weights -> Flax variables of `models.FIDInceptionV3`.

pytorch-fid releases its FID network's state dict as `WEIGHTS_FILE` (either torch.save
format; read here without torch). The Flax module names are the state dict's names, so
the map is one to one: conv weights are transposed to Flax's layout, BatchNorm's running
statistics go to batch_stats.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ipcgan_jax.models.inception import INPUT_SIZE, FIDInceptionV3
from ipcgan_jax.weights.mismatch import CheckpointMismatchError, mismatch_message
from ipcgan_jax.weights.templates import shape_template
from ipcgan_jax.weights.torch_state_dict import load_state_dict

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"
# State-dict entries the FID network carries but pool3 features do not use.
UNUSED_KEYS = ("fc.weight", "fc.bias")
UNUSED_SUFFIX = ".num_batches_tracked"

# (collection, Flax leaf, torch suffix, Flax array -> torch layout)
_LEAVES = (("params", ("conv", "kernel"), "conv.weight", (3, 2, 0, 1)),
           ("params", ("bn", "scale"), "bn.weight", None),
           ("params", ("bn", "bias"), "bn.bias", None),
           ("batch_stats", ("bn", "mean"), "bn.running_mean", None),
           ("batch_stats", ("bn", "var"), "bn.running_var", None))


def expected_state_dict_shapes() -> dict[str, tuple[int, ...]]:
    """torch state-dict key -> torch shape of every entry the pool3 features use."""
    shapes = shape_template(FIDInceptionV3(), jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))
    expected = {}
    for path, leaf in traverse_util.flatten_dict(shapes).items():
        collection, *module_path = path
        leaf = leaf.shape
        for leaf_collection, flax_leaf, torch_suffix, torch_axes in _LEAVES:
            if collection == leaf_collection and tuple(module_path[-2:]) == flax_leaf:
                torch_shape = tuple(leaf[a] for a in torch_axes) if torch_axes else tuple(leaf)
                expected[".".join(module_path[:-2] + [torch_suffix])] = torch_shape
                break
        else:
            raise AssertionError(f"no torch name for Flax variable {path}")
    return expected


def inception_variables(state_dict: Mapping[str, np.ndarray], source: str = "state dict") -> dict[str, Any]:
    """pytorch-fid's FIDInceptionV3 state dict -> Flax variables of `FIDInceptionV3`.

    Raises `CheckpointMismatchError` naming `source` and every missing, unexpected or
    mis-shaped key (fc.* and BatchNorm num_batches_tracked are accepted and unused)."""
    expected = expected_state_dict_shapes()
    present = {k for k in state_dict if k not in UNUSED_KEYS and not k.endswith(UNUSED_SUFFIX)}
    missing = sorted(set(expected) - present)
    unexpected = sorted(present - set(expected))
    misshaped = [(k, np.shape(state_dict[k]), expected[k])
                 for k in sorted(present & set(expected)) if tuple(np.shape(state_dict[k])) != expected[k]]
    if missing or unexpected or misshaped:
        raise CheckpointMismatchError(mismatch_message(
            source, f"not pytorch-fid's FID InceptionV3 state dict ({WEIGHTS_FILE})",
            missing=missing, unexpected=unexpected, misshaped=misshaped))
    flat = {}
    for key in expected:
        module_path, torch_suffix = key.split(".")[:-2], ".".join(key.split(".")[-2:])
        for collection, flax_leaf, suffix, torch_axes in _LEAVES:
            if suffix == torch_suffix:
                value = np.asarray(state_dict[key], np.float32)
                if torch_axes:  # torch (out, in, kh, kw) -> Flax (kh, kw, in, out)
                    value = np.transpose(value, (2, 3, 1, 0))
                flat[(collection, *module_path, *flax_leaf)] = value
    return traverse_util.unflatten_dict(flat)


def load_inception_variables(path: str) -> dict[str, Any]:
    """Flax variables from pytorch-fid's weights file (`WEIGHTS_FILE`, either torch.save
    format) or an .npz with the same keys."""
    return inception_variables(load_state_dict(path), source=path)
