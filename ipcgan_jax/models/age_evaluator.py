"""An age-group estimator used only to grade generated faces (not by the GAN's losses).

IPCGAN trains its generator against a frozen AlexNet age classifier, so that classifier
cannot judge the generator fairly: a generator may learn to fool it. The evaluator is a
different network (a small ResNet with batch norm, not AlexNet), with its own input
scaling and its own seed, trained separately (configs/age_evaluator.py).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ipcgan_jax.models.layers import Dtype, conv_function


class _ResidualBlock(nn.Module):
    """Basic ResNet block (two 3x3 convs, batch norm, projection shortcut on a shape change)."""

    features: int
    strides: int
    dtype: Dtype
    conv_impl: str

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9,  # noqa: E731
                                         dtype=self.dtype, param_dtype=jnp.float32, name=name)
        conv = lambda k, s, name: nn.Conv(self.features, (k, k), strides=(s, s), padding="SAME",  # noqa: E731
                                          use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                                          conv_general_dilated=conv_function(self.conv_impl, self.features),
                                          name=name)
        shortcut = x
        if self.strides != 1 or x.shape[-1] != self.features:
            shortcut = norm("shortcut_bn")(conv(1, self.strides, "shortcut_conv")(x))
        y = nn.relu(norm("bn1")(conv(3, self.strides, "conv1")(x)))
        # Zero-initialised last scale: each block starts as the identity (easier early training).
        y = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                         param_dtype=jnp.float32, scale_init=nn.initializers.zeros,
                         name="bn2")(conv(3, 1, "conv2")(y))
        return nn.relu(y + shortcut)


class AgeEvaluator(nn.Module):
    """AgeEvaluator(images, train) -> (N, num_groups) age-group logits.

    images: (N, image_size, image_size, 3) RGB scaled to [-1, 1] (pixels / 127.5 - 1),
    resized with TF1's legacy bilinear resize (`ipcgan_jax.preprocessing`); use
    `ipcgan_jax.age_evaluator.predict_age_groups` to go from uint8 faces of any size.
    Architecture: a 3x3 stem, then one stage per entry of `stage_features` (the first at
    stride 1, the others at stride 2) of `blocks_per_stage` residual blocks, global
    average pooling and a linear layer.
    """

    stage_features: Sequence[int] = (32, 64, 128, 256)
    blocks_per_stage: int = 2
    num_groups: int = 5
    image_size: int = 128
    dtype: Dtype = jnp.float32
    # How the convs run (models.layers.conv_function): the same function whichever, up to
    # float summation order; under 'onednn' the demo's evaluator's training step ran 1.3x
    # faster on a CPU (benchmarks/README.md, "The demo's budget").
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        x = images.astype(self.dtype)
        x = nn.Conv(self.stage_features[0], (3, 3), strides=(2, 2), padding="SAME", use_bias=False,
                    dtype=self.dtype, param_dtype=jnp.float32,
                    conv_general_dilated=conv_function(self.conv_impl, self.stage_features[0]), name="stem_conv")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                                 param_dtype=jnp.float32, name="stem_bn")(x))
        for stage, features in enumerate(self.stage_features):
            for block in range(self.blocks_per_stage):
                strides = 2 if stage > 0 and block == 0 else 1
                x = _ResidualBlock(features, strides, self.dtype, self.conv_impl,
                                   name=f"stage{stage}_block{block}")(x, train)
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        return nn.Dense(self.num_groups, param_dtype=jnp.float32, name="age_logits")(x)
