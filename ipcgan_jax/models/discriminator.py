"""The IPCGAN conditional patch discriminator."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ipcgan_jax.models.layers import Dtype, TFBatchNorm, conv_function, conv_init, one_hot_maps


class Discriminator(nn.Module):
    """D(images, age_group) -> raw patch scores (N, H/8, W/8, out_features).

    images: (N, H, W, 3) in [-1, 1]; age_group: int (N,), injected as one-hot maps after
    the first conv (docs/faithfulness.md §5). The code's strides (2, 2, 2, 1, 1) are kept,
    not the paper figure's. Defaults are faithful (6,963,392 parameters); `out_features=1`
    with `bn_epsilon=1e-5` is the variant users suggested for stability. `conv_impl`: how
    the convs run (layers.conv_function: XLA's conv or im2col + dot, the same function).
    """

    base_features: int = 64
    out_features: int = 512
    num_groups: int = 5
    bn_epsilon: float = 1e-3
    dtype: Dtype = jnp.float32
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, images: jax.Array, age_group: jax.Array, train: bool) -> jax.Array:
        f = self.base_features
        conv = lambda feat, s, name: nn.Conv(  # noqa: E731
            feat, (4, 4), strides=(s, s), padding="SAME", kernel_init=conv_init,
            dtype=self.dtype, param_dtype=jnp.float32, name=name,
            conv_general_dilated=conv_function(self.conv_impl, feat))
        bn = lambda name: TFBatchNorm(epsilon=self.bn_epsilon, dtype=self.dtype, name=name)  # noqa: E731
        lrelu = lambda x: nn.leaky_relu(x, 0.2)  # noqa: E731

        x = lrelu(conv(f, 2, "dis")(images.astype(self.dtype)))
        n, h, w, _ = x.shape
        x = jnp.concatenate([x, one_hot_maps(age_group, self.num_groups, h, w, self.dtype)], axis=-1)
        x = lrelu(bn("dis_bn0")(conv(2 * f, 2, "dis_1")(x), train))
        x = lrelu(bn("dis_bn1")(conv(4 * f, 2, "dis_2")(x), train))
        x = lrelu(bn("dis_bn2")(conv(8 * f, 1, "dis_3")(x), train))
        return conv(self.out_features, 1, "dis_4")(x).astype(jnp.float32)
