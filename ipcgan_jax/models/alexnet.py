"""Caffe AlexNet as ported to TensorFlow, identity and age heads (docs/faithfulness.md §6).

One module holds the conv trunk (conv1..conv5), fc6/fc7 and the identity head
(new_1, new_2) fine-tuned on CACD identities, and the age head (age_fc6..age_fc8) that
was trained on the frozen trunk. In the GAN both are frozen.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ipcgan_jax.models.layers import Dtype, conv_function, max_pool_function

ACTIVATIONS = ("conv1", "pool1", "norm1", "conv2", "pool2", "norm2", "conv3", "conv4",
               "conv5", "pool5", "fc6", "fc7", "new_1", "identity_logits",
               "age_fc6", "age_fc7", "age_logits")
_IDENTITY_OUTPUTS = {"fc6", "fc7", "new_1", "identity_logits"}
_AGE_OUTPUTS = {"age_fc6", "age_fc7", "age_logits"}


def local_response_norm(x: jax.Array, depth_radius: int = 2, alpha: float = 2e-5,
                        beta: float = 0.75, bias: float = 1.0) -> jax.Array:
    """`tf.nn.local_response_normalization`: x / (bias + alpha * window sum of x^2)^beta.

    TF does not divide alpha by the window size (Caffe does)."""
    squared = jnp.square(x.astype(jnp.float32))
    padded = jnp.pad(squared, [(0, 0)] * (x.ndim - 1) + [(depth_radius, depth_radius)])
    channels = x.shape[-1]
    window = sum(padded[..., i:i + channels] for i in range(2 * depth_radius + 1))
    return (x.astype(jnp.float32) * jnp.power(bias + alpha * window, -beta)).astype(x.dtype)


class AlexNet(nn.Module):
    """AlexNet(images, outputs) -> dict of the requested activations.

    images: (N, 227, 227, 3), RGB 0..255 minus [104, 117, 124] (docs/faithfulness.md §8).
      Smaller inputs work for quick runs (the fc layers size themselves at init).
    outputs: names from `ACTIVATIONS`; the forward pass stops at the last one needed.
    Order per block is conv, ReLU, max-pool, LRN; conv2, conv4, conv5 use 2 groups.
    Widths default to the original's; quick configs shrink them.
    conv_impl: how the grouped convs (conv2, conv4, conv5) run (layers.conv_function); the
    others keep XLA's conv, which was faster inside the training step on a CPU than im2col,
    except under 'onednn', which runs every conv. Under the CPU paths the max pools take
    their gradient from masks (layers.max_pool_function).
    """

    conv_features: Sequence[int] = (96, 256, 384, 384, 256)
    fc_features: int = 4096
    bottleneck_features: int = 256
    num_identities: int = 2000
    age_fc_features: int = 4096
    num_groups: int = 5
    dtype: Dtype = jnp.float32
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, images: jax.Array, outputs: Sequence[str] = ACTIVATIONS) -> dict[str, jax.Array]:
        unknown = set(outputs) - set(ACTIVATIONS)
        if unknown:
            raise ValueError(f"unknown AlexNet outputs {sorted(unknown)}; choose from {ACTIVATIONS}")
        wanted = set(outputs)
        last_conv_needed = max((ACTIVATIONS.index(k) for k in wanted), default=-1)
        conv = lambda feat, k, s, pad, groups, name: nn.Conv(  # noqa: E731
            feat, (k, k), strides=(s, s), padding=pad, feature_group_count=groups,
            dtype=self.dtype, param_dtype=jnp.float32, name=name,
            conv_general_dilated=(conv_function(self.conv_impl, feat)
                                  if groups > 1 or self.conv_impl == "onednn" else None))
        dense = lambda feat, name: nn.Dense(feat, dtype=self.dtype, param_dtype=jnp.float32, name=name)  # noqa: E731
        max_pool = max_pool_function(self.conv_impl)
        pool = lambda x: max_pool(x, 3, 2)  # noqa: E731
        c1, c2, c3, c4, c5 = self.conv_features

        act = {}
        x = images.astype(self.dtype)
        act["conv1"] = x = nn.relu(conv(c1, 11, 4, "VALID", 1, "conv1")(x))
        act["pool1"] = x = pool(x)
        act["norm1"] = x = local_response_norm(x)
        act["conv2"] = x = nn.relu(conv(c2, 5, 1, "SAME", 2, "conv2")(x))
        act["pool2"] = x = pool(x)
        act["norm2"] = x = local_response_norm(x)
        act["conv3"] = x = nn.relu(conv(c3, 3, 1, "SAME", 1, "conv3")(x))
        act["conv4"] = x = nn.relu(conv(c4, 3, 1, "SAME", 2, "conv4")(x))
        act["conv5"] = x = nn.relu(conv(c5, 3, 1, "SAME", 2, "conv5")(x))
        if last_conv_needed > ACTIVATIONS.index("conv5"):
            act["pool5"] = pool(x)
            flat = act["pool5"].reshape(x.shape[0], -1)  # NHWC order, as the TF port
            if wanted & _IDENTITY_OUTPUTS:
                act["fc6"] = h = nn.relu(dense(self.fc_features, "fc6")(flat))
                act["fc7"] = h = nn.relu(dense(self.fc_features, "fc7")(h))
                act["new_1"] = h = nn.relu(dense(self.bottleneck_features, "new_1")(h))
                act["identity_logits"] = dense(self.num_identities, "new_2")(h)
            if wanted & _AGE_OUTPUTS:
                act["age_fc6"] = h = nn.relu(dense(self.age_fc_features, "age_fc6")(flat))
                act["age_fc7"] = h = nn.relu(dense(self.age_fc_features, "age_fc7")(h))
                act["age_logits"] = dense(self.num_groups, "age_fc8")(h)
        return {k: act[k] for k in outputs}
