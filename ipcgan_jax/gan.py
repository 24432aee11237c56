"""The IPCGAN two-player model: state, initialisation and the compiled training step.

One `GanState` holds both players (parameters, BatchNorm statistics, optimizer states),
the step counter and, in the variant `generator_ema_decay`, a moving average of G's
weights, updated after each G update. The frozen AlexNet (identity trunk + age head) is an argument of
the step, never part of the state: it is not donated and not checkpointed.

Per step (docs/faithfulness.md §10): one D update on (real x_t with c_t, real x_t with
the false c_f, G(x_s) with c_t), then one G update on a fresh source batch against the
updated D.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ipcgan_jax import losses, preprocessing
from ipcgan_jax.constants import FIELDS_ADDED_LATER
from ipcgan_jax.models import AlexNet, Discriminator, Generator
from ipcgan_jax.optimizers import make_optimizer

PyTree = Any


@flax.struct.dataclass
class GanState:
    step: jax.Array
    g_params: PyTree
    g_batch_stats: PyTree
    d_params: PyTree
    d_batch_stats: PyTree
    g_opt_state: optax.OptState
    d_opt_state: optax.OptState
    # An exponential moving average of g_params (the variant `generator_ema_decay`; None
    # when off, as in the original): what sample sheets, evaluation and export use.
    g_ema_params: PyTree = None


def compute_dtype(config: ml_collections.ConfigDict):
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.compute_dtype]


def conv_impl(config: ml_collections.ConfigDict) -> str:
    """How G's and D's convs and AlexNet's grouped convs run (models.layers.conv_function);
    configs recorded before the option existed ran XLA's conv."""
    return config.get("conv_impl", FIELDS_ADDED_LATER["conv_impl"])


def generator_ema_decay(config: ml_collections.ConfigDict) -> float:
    """The decay of G's weight average (0: none, the original); configs recorded before the
    option existed kept none."""
    return float(config.get("generator_ema_decay", FIELDS_ADDED_LATER["generator_ema_decay"]))


def build_generator(config: ml_collections.ConfigDict) -> Generator:
    return Generator(dtype=compute_dtype(config), conv_impl=conv_impl(config), **config.model.generator)


def build_discriminator(config: ml_collections.ConfigDict) -> Discriminator:
    return Discriminator(dtype=compute_dtype(config), conv_impl=conv_impl(config), **config.model.discriminator)


def build_alexnet(config: ml_collections.ConfigDict) -> AlexNet:
    return AlexNet(dtype=compute_dtype(config), conv_impl=conv_impl(config), **config.model.alexnet)


def build_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    opt = config.optimizer
    return make_optimizer(opt.learning_rate, opt.b1, opt.b2, opt.eps, opt.epsilon_placement)


def init_state(config: ml_collections.ConfigDict, rng: jax.Array) -> GanState:
    """Fresh G and D with the official initialisers (docs/faithfulness.md §3, §5)."""
    size = config.data.image_size
    images = jnp.zeros((1, size, size, 3), jnp.float32)
    age_group = jnp.zeros((1,), jnp.int32)
    g_rng, d_rng = jax.random.split(rng)
    g_vars = build_generator(config).init(g_rng, images, age_group, train=True)
    d_vars = build_discriminator(config).init(d_rng, images, age_group, train=True)
    optimizer = build_optimizer(config)
    # The average starts at G's initial weights (a copy: the step donates both).
    g_ema_params = jax.tree.map(jnp.copy, g_vars["params"]) if generator_ema_decay(config) else None
    return GanState(step=jnp.zeros((), jnp.int32),
                    g_params=g_vars["params"], g_batch_stats=g_vars["batch_stats"],
                    d_params=d_vars["params"], d_batch_stats=d_vars["batch_stats"],
                    g_opt_state=optimizer.init(g_vars["params"]),
                    d_opt_state=optimizer.init(d_vars["params"]),
                    g_ema_params=g_ema_params)


def sampling_variables(state: GanState) -> dict:
    """G's variables for sampling: the weight average when the run keeps one (with the live
    BatchNorm statistics, which the average has no counterpart of), else the live weights."""
    params = state.g_params if state.g_ema_params is None else state.g_ema_params
    return {"params": params, "batch_stats": state.g_batch_stats}


def _global_norm(tree: PyTree) -> jax.Array:
    return optax.tree.norm(jax.tree.map(lambda x: x.astype(jnp.float32), tree))


def make_train_step(config: ml_collections.ConfigDict):
    """Returns `train_step(state, batch, frozen_alexnet) -> (state, metrics)` (uncompiled).

    batch: source_d, source_g (G-input scaling), source_g_alexnet (AlexNet scaling),
    real ([-1, 1]), target_group, false_group (int (N,)). frozen_alexnet: AlexNet params
    holding the identity trunk and the age head.
    """
    generator, discriminator, alexnet = (build_generator(config), build_discriminator(config),
                                         build_alexnet(config))
    optimizer = build_optimizer(config)
    ema_decay = generator_ema_decay(config)
    weights = config.loss
    feature_layer = weights.feature_layer or None
    alexnet_size = config.data.alexnet_size

    def train_step(state: GanState, batch: dict, frozen_alexnet: PyTree):
        target, false = batch["target_group"], batch["false_group"]
        real = batch["real"]

        # ---- D update. G runs in training mode without gradients; its BN statistics
        # update here as in the original (twice per step in total).
        fake, g_vars = generator.apply(
            {"params": state.g_params, "batch_stats": state.g_batch_stats},
            batch["source_d"], target, train=True, mutable=["batch_stats"])
        fake = jax.lax.stop_gradient(fake)

        def d_loss_fn(d_params):
            d_stats = state.d_batch_stats
            scores = {}
            for name, images, group in (("real_true", real, target), ("real_false", real, false),
                                        ("fake", fake, target)):
                scores[name], new_vars = discriminator.apply(
                    {"params": d_params, "batch_stats": d_stats}, images, group,
                    train=True, mutable=["batch_stats"])
                d_stats = new_vars["batch_stats"]
            raw = losses.discriminator_loss(d_real_true=scores["real_true"],
                                            d_real_false=scores["real_false"],
                                            d_fake=scores["fake"])
            return weights.gan_weight * raw, (raw, scores, d_stats)

        (d_loss, (d_raw, scores, d_stats)), d_grads = jax.value_and_grad(
            d_loss_fn, has_aux=True)(state.d_params)
        d_updates, d_opt_state = optimizer.update(d_grads, state.d_opt_state, state.d_params)
        d_params = optax.apply_updates(state.d_params, d_updates)

        # ---- G update on a fresh source batch, against the updated D (its BN statistics
        # are not updated here: nothing reads them).
        source_features = None
        if feature_layer:
            source_features = alexnet.apply({"params": frozen_alexnet}, batch["source_g_alexnet"],
                                            outputs=(feature_layer,))[feature_layer]

        def g_loss_fn(g_params):
            generated, new_vars = generator.apply(
                {"params": g_params, "batch_stats": g_vars["batch_stats"]},
                batch["source_g"], target, train=True, mutable=["batch_stats"])
            d_fake = discriminator.apply({"params": d_params, "batch_stats": d_stats},
                                         generated, target, train=True)
            alexnet_input = preprocessing.generator_output_to_alexnet_input(generated, alexnet_size)
            if weights.age_weight:
                wanted = ("age_logits", feature_layer) if feature_layer else ("age_logits",)
                generated_act = alexnet.apply({"params": frozen_alexnet}, alexnet_input, outputs=wanted)
            else:
                # No age loss: the age head runs on a stop-gradient copy, for the logged loss
                # and accuracy only, so the backward pass ends at the feature layer instead of
                # differentiating the whole AlexNet to multiply by zero (the same gradient;
                # XLA computes the shared convs once).
                generated_act = (alexnet.apply({"params": frozen_alexnet}, alexnet_input,
                                               outputs=(feature_layer,)) if feature_layer else {})
                generated_act["age_logits"] = alexnet.apply(
                    {"params": frozen_alexnet}, jax.lax.stop_gradient(alexnet_input),
                    outputs=("age_logits",))["age_logits"]
            raw = {"adversarial": losses.generator_adversarial_loss(d_fake=d_fake),
                   "age": losses.age_classification_loss(logits=generated_act["age_logits"],
                                                         age_group=target)}
            if feature_layer:
                raw["feature"] = losses.identity_feature_loss(
                    generated_features=generated_act[feature_layer],
                    source_features=source_features)
            weighted = {"adversarial": weights.gan_weight * raw["adversarial"],
                        "age": weights.age_weight * raw["age"]}
            if feature_layer:
                weighted["feature"] = weights.feature_weight * raw["feature"]
            if weights.pixel_weight:
                raw["pixel"] = losses.pixel_loss(
                    generated=generated,
                    source=preprocessing.generator_input_to_unit_range(batch["source_g"]))
                weighted["pixel"] = weights.pixel_weight * raw["pixel"]
            total = sum(weighted.values())
            age_accuracy = jnp.mean(jnp.argmax(generated_act["age_logits"], -1) == target)
            return total, (raw, weighted, new_vars["batch_stats"], d_fake, age_accuracy)

        (g_loss, (g_raw, g_weighted, g_stats, d_fake_g, age_accuracy)), g_grads = (
            jax.value_and_grad(g_loss_fn, has_aux=True)(state.g_params))
        g_updates, g_opt_state = optimizer.update(g_grads, state.g_opt_state, state.g_params)
        g_params = optax.apply_updates(state.g_params, g_updates)
        g_ema_params = state.g_ema_params
        if ema_decay:
            g_ema_params = optax.incremental_update(g_params, g_ema_params, step_size=1.0 - ema_decay)

        metrics = {
            "d_loss": d_raw, "d_loss_weighted": d_loss,
            "g_loss_weighted": g_loss,
            "d_score_real_true": jnp.mean(scores["real_true"]),
            "d_score_real_false": jnp.mean(scores["real_false"]),
            "d_score_fake": jnp.mean(scores["fake"]),
            "d_score_fake_after_update": jnp.mean(d_fake_g),
            "d_grad_norm": _global_norm(d_grads), "g_grad_norm": _global_norm(g_grads),
            "generated_age_accuracy": age_accuracy,
        }
        for term, value in g_raw.items():
            metrics[f"g_{term}_loss"] = value
            metrics[f"g_{term}_loss_weighted"] = g_weighted[term]
        new_state = state.replace(step=state.step + 1, g_params=g_params, g_batch_stats=g_stats,
                                  d_params=d_params, d_batch_stats=d_stats,
                                  g_opt_state=g_opt_state, d_opt_state=d_opt_state,
                                  g_ema_params=g_ema_params)
        return new_state, metrics

    return train_step


def make_generate(config: ml_collections.ConfigDict, *, train_mode_bn: bool = False):
    """Returns `generate(g_variables, images, age_group) -> images in [-1, 1]` (uncompiled).

    By default the generator runs in test mode: moving statistics everywhere except the
    residual blocks, whose BNs use batch statistics in every mode
    (docs/faithfulness.md §4)."""
    generator = build_generator(config)

    def generate(g_variables: PyTree, images: jax.Array, age_group: jax.Array) -> jax.Array:
        return generator.apply(g_variables, images, age_group, train=train_mode_bn)

    return generate
