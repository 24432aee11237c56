"""The IPCGAN generator: a ResNet encoder/decoder conditioned on the target age group."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ipcgan_jax import preprocessing
from ipcgan_jax.models.layers import ConditionedConv, ConvTransposeSame, Dtype, TFBatchNorm, conv_function, conv_init

# Residual output: the source pixel's pre-tanh value is clipped so that atanh stays finite
# (0.999 is pixel 0.13 from either end of 0..255).
_RESIDUAL_CLIP = 0.999


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input, no ReLU after the add (docs/faithfulness.md §3).

    Both BNs use batch statistics in every mode, as in the original."""

    features: int
    bn_epsilon: float = 1e-3
    dtype: Dtype = jnp.float32
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        conv = lambda name: nn.Conv(self.features, (3, 3), padding="SAME", kernel_init=conv_init,  # noqa: E731
                                    dtype=self.dtype, param_dtype=jnp.float32, name=name,
                                    conv_general_dilated=conv_function(self.conv_impl, self.features))
        bn = lambda name: TFBatchNorm(epsilon=self.bn_epsilon, always_batch_stats=True,  # noqa: E731
                                      dtype=self.dtype, name=name)
        y = nn.relu(bn("bn1")(conv("conv1")(x), train))
        return bn("bn2")(conv("conv2")(y), train) + x


class Generator(nn.Module):
    """G(images, age_group) -> images in [-1, 1] (tanh), the input's spatial size.

    images: (N, H, W, 3), RGB 0..255 minus the Caffe mean (docs/faithfulness.md §8); H, W
      divisible by 4.
    age_group: int (N,) in [0, num_groups), expanded here into one-hot condition maps;
      or float group weights (N, num_groups), the maps of ages between groups at
      inference (training only ever sees one-hot maps).
    train: batch statistics (and their moving-average update when `batch_stats` is
      mutable); False uses the moving averages except in the residual blocks
      (docs/faithfulness.md §4).

    `base_features` 32 and 6 residual blocks are the paper's network (1,976,611
    parameters); smaller values are for quick runs only. `deconv_impl` picks how the two
    transposed convs are computed ('subpixel' or 'conv_transpose', the same function);
    `conv_impl` how every conv runs (layers.conv_function: XLA's conv or im2col + dot;
    'auto' runs XLA's conv in test mode).

    `residual_output` (a variant; the original is False): the last conv's output is added
    to the source image before the tanh, `tanh(atanh(source) + conv4(x))`, with conv4
    starting at zero, so G starts as the identity map and learns the change of age
    instead of redrawing the whole face (docs/real_faces.md gives the measurements).
    """

    base_features: int = 32
    num_res_blocks: int = 6
    num_groups: int = 5
    bn_epsilon: float = 1e-3
    deconv_impl: str = "subpixel"
    residual_output: bool = False
    dtype: Dtype = jnp.float32
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, images: jax.Array, age_group: jax.Array, train: bool) -> jax.Array:
        f = self.base_features
        # im2col pays off in the backward pass (weight gradients); in test mode (the photo
        # tool, evaluation) 'auto' keeps XLA's conv: batch 1 ran 232 vs 371 ms per face
        # (benchmarks/bench_inference.py --conv-impl).
        conv_impl = "xla" if self.conv_impl == "auto" and not train else self.conv_impl
        conv = lambda feat, k, s, name: nn.Conv(  # noqa: E731
            feat, (k, k), strides=(s, s), padding="SAME", kernel_init=conv_init,
            dtype=self.dtype, param_dtype=jnp.float32, name=name,
            conv_general_dilated=conv_function(conv_impl, feat))
        bn = lambda name: TFBatchNorm(epsilon=self.bn_epsilon, dtype=self.dtype, name=name)  # noqa: E731

        # conv1 sees the image and the one-hot condition maps (docs/faithfulness.md §3),
        # computed without concatenating them (layers.ConditionedConv: the same function).
        x = ConditionedConv(f, 7, self.num_groups, dtype=self.dtype, conv_impl=conv_impl, name="conv1")(
            images, age_group)
        x = nn.relu(bn("bn1")(x, train))
        x = nn.relu(bn("bn2")(conv(2 * f, 3, 2, "conv2")(x), train))
        x = nn.relu(bn("bn3")(conv(4 * f, 3, 2, "conv3")(x), train))
        for i in range(self.num_res_blocks):
            x = ResidualBlock(4 * f, self.bn_epsilon, self.dtype, conv_impl, name=f"unit_{i}")(x, train)
        x = nn.relu(bn("bn4")(ConvTransposeSame(2 * f, dtype=self.dtype, impl=self.deconv_impl,
                                                   conv_impl=conv_impl, name="deconv1")(x), train))
        x = nn.relu(bn("bn5")(ConvTransposeSame(f, dtype=self.dtype, impl=self.deconv_impl,
                                                   conv_impl=conv_impl, name="deconv2")(x), train))
        if not self.residual_output:
            x = conv(3, 7, 1, "conv4")(x)
            return jnp.tanh(x.astype(jnp.float32))
        delta = nn.Conv(3, (7, 7), padding="SAME", kernel_init=nn.initializers.zeros, dtype=self.dtype,
                        param_dtype=jnp.float32, name="conv4",
                        conv_general_dilated=conv_function(conv_impl, 3))(x)
        source = preprocessing.generator_input_to_unit_range(images)
        source = jnp.arctanh(jnp.clip(source, -_RESIDUAL_CLIP, _RESIDUAL_CLIP))
        return jnp.tanh(source + delta.astype(jnp.float32))
