"""The frozen AlexNet parts a run reads: the identity trunk with its head
(`config.frozen.alexnet`) and the age head (`config.frozen.age_classifier`), each an
export of a trained network, checked against the configured network before any work.

Relative paths are resolved against the run's workdir (the demo trains its own networks
into sub-folders of its workdir)."""
from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from ipcgan_jax import checkpointing
from ipcgan_jax.models import AlexNet
from ipcgan_jax.weights import templates

PyTree = Any
# Field of config.frozen -> (the config that trains the network, the shapes of its params).
_PARTS = {"alexnet": ("configs/alexnet_identity.py", templates.alexnet_variables_template),
          "age_classifier": ("configs/age_classifier.py", templates.age_classifier_variables_template)}
FROZEN_PARTS = tuple(_PARTS)


def _how_to_make(key: str, maker: str) -> str:
    return (f"train it with `python main.py --config={maker} --workdir=DIR` and set {key}=DIR/export "
            "(a relative path is resolved against this run's --workdir), or convert the original "
            "weights with `python -m ipcgan_jax.convert`")


def load_frozen_alexnet(config: ml_collections.ConfigDict, workdir: str,
                        parts: Sequence[str] = FROZEN_PARTS) -> PyTree:
    """The AlexNet params of the exports named by `config.frozen.<part>` for each of
    `parts`, merged: every layer present with the shape config.model.alexnet and
    config.data.alexnet_size give it. CheckpointError naming the config key and the
    command that makes the network otherwise."""
    # Shapes only: the compute dtype does not change them.
    alexnet = AlexNet(**config.model.alexnet)
    params = {}
    for part in parts:
        maker, make_template = _PARTS[part]
        key = f"frozen.{part}"
        how = _how_to_make(key, maker)
        if not config.frozen[part]:
            raise checkpointing.CheckpointError(
                f"config key {key!r} is empty: it must name an exported network; {how}")
        path = os.path.join(workdir, os.path.expanduser(config.frozen[part]))
        try:
            variables, _ = checkpointing.load_variables(path)
        except (checkpointing.CheckpointError, FileNotFoundError) as e:
            raise checkpointing.CheckpointError(f"{key}: {e}; {how}") from None
        template = make_template(alexnet, config.data.alexnet_size)["params"]
        stored = variables.get("params", {})
        missing = sorted(set(template) - set(stored))
        mismatched = sorted(name for name in set(template) & set(stored)
                            if jax.tree.map(np.shape, stored[name])
                            != jax.tree.map(lambda s: s.shape, template[name]))
        if missing or mismatched:
            raise checkpointing.CheckpointError(
                f"{key}: the network at {path} does not match config.model.alexnet / "
                f"config.data.alexnet_size (missing layers {missing}, mis-shaped layers {mismatched}); "
                f"{how} with the same model.alexnet and data settings")
        params.update({name: stored[name] for name in template})
    return params
