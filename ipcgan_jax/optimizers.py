"""Optimizers of the original training (docs/faithfulness.md §9)."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class TF1AdamState(NamedTuple):
    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def tf1_adam(learning_rate: float, b1: float = 0.9, b2: float = 0.999,
             eps: float = 1e-8) -> optax.GradientTransformation:
    """Adam as TF1's `tf.train.AdamOptimizer` computes it.

    TF1 folds the bias corrections into the step size and adds epsilon to sqrt(v)
    *before* correction: update = lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps).
    optax.adam adds epsilon after correction; the two differ for gradients near epsilon.
    """

    def init_fn(params: optax.Params) -> TF1AdamState:
        zeros = lambda p: jnp.zeros_like(p, dtype=jnp.float32)  # noqa: E731
        return TF1AdamState(count=jnp.zeros((), jnp.int32), mu=jax.tree.map(zeros, params),
                            nu=jax.tree.map(zeros, params))

    def update_fn(grads: optax.Updates, state: TF1AdamState, params=None):
        del params
        count = state.count + 1
        t = count.astype(jnp.float32)
        mu = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.mu, grads)
        nu = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * jnp.square(g), state.nu, grads)
        step_size = learning_rate * jnp.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
        updates = jax.tree.map(lambda m, v: -step_size * m / (jnp.sqrt(v) + eps), mu, nu)
        return updates, TF1AdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(learning_rate: float, b1: float, b2: float, eps: float,
                   epsilon_placement: str = "tf1") -> optax.GradientTransformation:
    """The configured Adam: 'tf1' (faithful) or 'optax' (epsilon after bias correction)."""
    if epsilon_placement == "tf1":
        return tf1_adam(learning_rate, b1, b2, eps)
    if epsilon_placement == "optax":
        return optax.adam(learning_rate, b1, b2, eps)
    raise ValueError(f"optimizer.epsilon_placement must be 'tf1' or 'optax', got {epsilon_placement!r}")
