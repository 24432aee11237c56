"""IPCGAN loss terms (docs/faithfulness.md §7): pure `jnp` functions, unweighted.

Callers weight them. d_real_true = D(x_t, c_t), d_real_false = D(x_t, c_f),
d_fake = D(G(x_s, c_t), c_t). Means run over every element of the patch-score maps
(N * 16 * 16 * 512 in the paper).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def discriminator_loss(*, d_real_true: jax.Array, d_real_false: jax.Array,
                       d_fake: jax.Array) -> jax.Array:
    """LSGAN D loss with the false-condition term, unweighted:
    0.5 * [mean((D1 - 1)^2) + 0.5 * (mean(D2^2) + mean(D3^2))]."""
    real = jnp.mean(jnp.square(d_real_true.astype(jnp.float32) - 1.0))
    fakes = jnp.mean(jnp.square(d_real_false.astype(jnp.float32))) + jnp.mean(
        jnp.square(d_fake.astype(jnp.float32)))
    return 0.5 * (real + 0.5 * fakes)


def generator_adversarial_loss(*, d_fake: jax.Array) -> jax.Array:
    """LSGAN G loss, unweighted: 0.5 * mean((D3 - 1)^2)."""
    return 0.5 * jnp.mean(jnp.square(d_fake.astype(jnp.float32) - 1.0))


def identity_feature_loss(*, generated_features: jax.Array, source_features: jax.Array) -> jax.Array:
    """Mean over the batch of the summed squared feature difference, unweighted."""
    diff = generated_features.astype(jnp.float32) - source_features.astype(jnp.float32)
    return jnp.mean(jnp.sum(jnp.square(diff).reshape(diff.shape[0], -1), axis=1))


def pixel_loss(*, generated: jax.Array, source: jax.Array) -> jax.Array:
    """Mean absolute difference between G's output and its source, both in [-1, 1] (a
    variant; the original has no pixel term). L1 rather than L2: a change costs the same per
    pixel however large, so G can still redraw a hairline but not tint the whole image."""
    return jnp.mean(jnp.abs(generated.astype(jnp.float32) - source.astype(jnp.float32)))


def age_classification_loss(*, logits: jax.Array, age_group: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of the age logits against the target groups."""
    return optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), age_group.astype(jnp.int32)).mean()
