"""AlexNet's two heads on flattened pool5, as Flax modules with dropout for training.

Their parameters are named as in `ipcgan_jax.models.AlexNet` and applied to AlexNet's
own params (`{name: params[name]}`), so what a classifier run trains and exports is
AlexNet's params tree, and without dropout each head computes what AlexNet does.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ipcgan_jax.constants import ALEXNET_AGE_HEAD_LAYERS, ALEXNET_IDENTITY_HEAD_LAYERS, ALEXNET_TRUNK_LAYERS
from ipcgan_jax.models import AlexNet

PyTree = Any
# As AlexNet's layers: float32 parameters, computed in the module's dtype.
_Dense = functools.partial(nn.Dense, param_dtype=jnp.float32)


def pool5_features(alexnet: AlexNet, params: PyTree, images: jax.Array) -> jax.Array:
    """Flattened pool5 (N, features) of the trunk in `params` (AlexNet's trunk layers)."""
    trunk = {name: params[name] for name in ALEXNET_TRUNK_LAYERS}
    pool5 = alexnet.apply({"params": trunk}, images, outputs=("pool5",))["pool5"]
    return pool5.reshape(pool5.shape[0], -1)


class DenseHead(nn.Module):
    """Dense + ReLU layers `dropped`, each followed by dropout while training (a
    `dropout_rng` given: one key per layer, split from it), then Dense + ReLU layers
    `plain`, then the `output` layer: logits, in float32. Layers are (name, features)."""

    dropped: tuple[tuple[str, int], ...]
    plain: tuple[tuple[str, int], ...]
    output: tuple[str, int]
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.dropped + self.plain + (self.output,))

    @nn.compact
    def __call__(self, pool5: jax.Array, dropout_rng: jax.Array | None = None) -> jax.Array:
        count = len(self.dropped)
        rngs = jax.random.split(dropout_rng, count) if dropout_rng is not None else (None,) * count
        h = pool5
        for (name, features), rng in zip(self.dropped, rngs):
            h = nn.relu(_Dense(features, dtype=self.dtype, name=name)(h))
            h = nn.Dropout(self.dropout_rate)(h, deterministic=rng is None, rng=rng)
        for name, features in self.plain:
            h = nn.relu(_Dense(features, dtype=self.dtype, name=name)(h))
        name, features = self.output
        return _Dense(features, dtype=self.dtype, name=name)(h).astype(jnp.float32)


def identity_head(alexnet: AlexNet, dropout_rate: float = 0.0) -> DenseHead:
    """AlexNet's identity head fc6 -> fc7 -> new_1 -> new_2 (dropout after fc6 and fc7),
    of `alexnet`'s sizes and compute dtype."""
    fc6, fc7, new_1, new_2 = ALEXNET_IDENTITY_HEAD_LAYERS
    return DenseHead(dropped=((fc6, alexnet.fc_features), (fc7, alexnet.fc_features)),
                     plain=((new_1, alexnet.bottleneck_features),), output=(new_2, alexnet.num_identities),
                     dropout_rate=dropout_rate, dtype=alexnet.dtype)


def age_head(alexnet: AlexNet, dropout_rate: float = 0.0) -> DenseHead:
    """AlexNet's age head age_fc6 -> age_fc7 -> age_fc8 (dropout after age_fc6 and age_fc7),
    of `alexnet`'s sizes and compute dtype."""
    fc6, fc7, fc8 = ALEXNET_AGE_HEAD_LAYERS
    return DenseHead(dropped=((fc6, alexnet.age_fc_features), (fc7, alexnet.age_fc_features)), plain=(),
                     output=(fc8, alexnet.num_groups), dropout_rate=dropout_rate, dtype=alexnet.dtype)


def apply_head(head: DenseHead, params: PyTree, pool5: jax.Array,
               dropout_rng: jax.Array | None = None) -> jax.Array:
    """`head` on flattened pool5, with its layers picked from AlexNet's `params` by name."""
    return head.apply({"params": {name: params[name] for name in head.layer_names}}, pool5, dropout_rng)


def age_head_logits(alexnet: AlexNet, trunk_params: PyTree, age_params: PyTree, images: jax.Array, *,
                    dropout_rate: float = 0.0, rng: jax.Array | None = None) -> jax.Array:
    """Age logits of the age head on the frozen trunk (no gradient into the trunk); without
    dropout equal to `alexnet.apply(..., outputs=("age_logits",))`."""
    pool5 = jax.lax.stop_gradient(pool5_features(alexnet, trunk_params, images))
    return apply_head(age_head(alexnet, dropout_rate), age_params, pool5, rng)
