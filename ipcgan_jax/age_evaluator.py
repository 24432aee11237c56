"""The independent age evaluator as a tool: build it from its architecture, load an
export of an 'age_evaluator' run, and predict age groups of RGB faces.

The network is `ipcgan_jax.models.AgeEvaluator`; `ipcgan_jax.classifiers` trains it and
`ipcgan_jax.evaluation` grades generated faces with it.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from ipcgan_jax import checkpointing, preprocessing
from ipcgan_jax.models import AgeEvaluator

PyTree = Any
TASK = "age_evaluator"
INPUT_SCALING = ("RGB 0..255 resized to architecture.image_size with TF1 legacy bilinear "
                 "(no antialiasing), then / 127.5 - 1 (range [-1, 1])")


def build_age_evaluator(architecture: Mapping[str, Any], dtype: Any = jnp.float32,
                        conv_impl: str = "xla") -> AgeEvaluator:
    """The evaluator module from its architecture settings (config.model.evaluator);
    conv_impl: how its convs run (the same function: models.layers.conv_function)."""
    return AgeEvaluator(stage_features=tuple(architecture["stage_features"]),
                        blocks_per_stage=int(architecture["blocks_per_stage"]),
                        num_groups=int(architecture["num_groups"]),
                        image_size=int(architecture["image_size"]), dtype=dtype, conv_impl=conv_impl)


def evaluator_input(pixels: jax.Array, image_size: int) -> jax.Array:
    """RGB 0..255 faces (N, H, W, 3), any size and dtype -> the evaluator's input:
    resized to `image_size` (TF1 legacy bilinear, as the training pipeline), in [-1, 1]."""
    return preprocessing.pixels_to_discriminator_input(jnp.asarray(pixels, jnp.float32), image_size)


def load_age_evaluator(path: str) -> tuple[AgeEvaluator, PyTree, dict]:
    """(module, variables, metadata) of an evaluator exported by an 'age_evaluator' run
    (its WORKDIR/export). metadata["architecture"] rebuilds the module; see
    `predict_age_groups` for the input."""
    variables, metadata = checkpointing.load_variables(path)
    if metadata.get("task") != TASK or "architecture" not in metadata:
        raise checkpointing.CheckpointError(
            f"{path} is not an exported age evaluator (metadata task {metadata.get('task')!r}); "
            "train one with `python main.py --config=configs/age_evaluator.py --workdir=DIR` "
            "and pass DIR/export")
    return build_age_evaluator(metadata["architecture"]), variables, metadata


def predict_age_groups(module: AgeEvaluator, variables: PyTree, pixels: jax.Array) -> jax.Array:
    """Age-group logits (N, num_groups) for RGB faces `pixels` (N, H, W, 3), uint8 or float
    in 0..255, any size: resized to module.image_size and scaled to [-1, 1]
    (INPUT_SCALING). Batch norm uses its running statistics (inference)."""
    return module.apply(variables, evaluator_input(pixels, module.image_size), train=False)
