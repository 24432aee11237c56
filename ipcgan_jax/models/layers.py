"""Layers shared by the IPCGAN networks, reproducing the original TensorFlow 1 ops.

TF "SAME" padding is `jax.lax`'s "SAME" (odd padding goes bottom/right), so plain
`flax.linen.Conv` matches `tf.nn.conv2d`. What Flax has no exact twin for lives here:
TF1's zero-debiased BatchNorm and `tf.nn.conv2d_transpose` with TF's kernel layout.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# Official initialisers (SPEC §2): conv weights truncated normal sd 0.02 (the sd of the
# untruncated normal, cut at 2 sd, as tf.truncated_normal), transposed conv normal sd 0.02.
conv_init = nn.initializers.truncated_normal(stddev=0.02)
deconv_init = nn.initializers.normal(stddev=0.02)


class TFBatchNorm(nn.Module):
    """BatchNorm as the original `batch_norm()`.

    Batch statistics over every axis but the last, biased variance, `epsilon` 1e-3.
    The moving averages are TF1's zero-debiased ones (`assign_moving_average(...,
    zero_debias=True)`): `biased_*` shadows start at 0 and the published `mean`/`var`
    are shadow / (1 - decay**num_updates), so the initial variance of 1 is discarded at
    the first update. Statistics update whenever the `batch_stats` collection is mutable
    and batch statistics are in use.

    always_batch_stats: the residual-block BNs of the original use batch statistics
      even in test mode (SPEC §2 quirk).
    """

    epsilon: float = 1e-3
    decay: float = 0.9
    always_batch_stats: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
        stat = lambda name, fill: self.variable(  # noqa: E731
            "batch_stats", name, lambda: jnp.full((channels,), fill, jnp.float32))
        mean = stat("mean", 0.0)
        var = stat("var", 1.0)
        biased_mean = stat("biased_mean", 0.0)
        biased_var = stat("biased_var", 0.0)
        num_updates = self.variable("batch_stats", "num_updates", lambda: jnp.zeros((), jnp.float32))

        if train or self.always_batch_stats:
            x32 = x.astype(jnp.float32)
            axes = tuple(range(x.ndim - 1))
            batch_mean = jnp.mean(x32, axis=axes)
            batch_var = jnp.mean(jnp.square(x32 - batch_mean), axis=axes)
            if train and self.is_mutable_collection("batch_stats") and not self.is_initializing():
                step = num_updates.value + 1.0
                keep = 1.0 - self.decay
                biased_mean.value = biased_mean.value - (biased_mean.value - batch_mean) * keep
                biased_var.value = biased_var.value - (biased_var.value - batch_var) * keep
                debias = 1.0 - self.decay ** step
                mean.value = biased_mean.value / debias
                var.value = biased_var.value / debias
                num_updates.value = step
            use_mean, use_var = batch_mean, batch_var
        else:
            use_mean, use_var = mean.value, var.value
        inv = jax.lax.rsqrt(use_var + self.epsilon) * scale
        shift = bias - use_mean * inv
        return (x * inv.astype(x.dtype) + shift.astype(x.dtype)).astype(self.dtype)


class ConvTransposeSame(nn.Module):
    """`tf.nn.conv2d_transpose(x, kernel, output = input * stride, padding="SAME")`.

    The kernel keeps TF's layout (kh, kw, out, in) so original weights load unchanged.
    """

    features: int
    kernel_size: int = 3
    stride: int = 2
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", deconv_init, (k, k, self.features, x.shape[-1]), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        y = jax.lax.conv_transpose(
            x.astype(self.dtype), kernel.astype(self.dtype), (self.stride, self.stride), "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=True)
        return y + bias.astype(self.dtype)


def one_hot_maps(age_group: jax.Array, num_groups: int, height: int, width: int,
                 dtype: Dtype) -> jax.Array:
    """Condition maps (N, H, W, num_groups): channel `age_group` is 1, the rest 0."""
    one_hot = jax.nn.one_hot(age_group, num_groups, dtype=dtype)
    return jnp.broadcast_to(one_hot[:, None, None, :], (age_group.shape[0], height, width, num_groups))
