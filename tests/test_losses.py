"""Loss terms of docs/faithfulness.md §7 on inputs whose values are computed by hand."""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from ipcgan_jax import losses

PATCH_SHAPE = (2, 16, 16, 512)


def test_discriminator_loss_all_half():
    half = jnp.full(PATCH_SHAPE, 0.5)
    # 0.5 * [(0.5-1)^2 + 0.5 * (0.5^2 + 0.5^2)] = 0.5 * [0.25 + 0.25] = 0.25
    value = losses.discriminator_loss(d_real_true=half, d_real_false=half, d_fake=half)
    assert float(value) == pytest.approx(0.25, rel=1e-7)


def test_discriminator_loss_perfect_discriminator_is_zero():
    value = losses.discriminator_loss(d_real_true=jnp.ones(PATCH_SHAPE), d_real_false=jnp.zeros(PATCH_SHAPE),
                                      d_fake=jnp.zeros(PATCH_SHAPE))
    assert float(value) == 0.0


def test_discriminator_loss_weights_each_term():
    # D1 = 3 everywhere -> mean (3-1)^2 = 4; D2 = 2 -> 4; D3 = 0 -> 0
    value = losses.discriminator_loss(d_real_true=jnp.full(PATCH_SHAPE, 3.0),
                                      d_real_false=jnp.full(PATCH_SHAPE, 2.0), d_fake=jnp.zeros(PATCH_SHAPE))
    assert float(value) == pytest.approx(0.5 * (4.0 + 0.5 * (4.0 + 0.0)))  # 3.0


def test_discriminator_loss_means_over_every_element():
    # half the patch scores 1 (error 0), half 3 (error 4) -> mean 2, over all N*16*16*512
    d1 = np.ones(PATCH_SHAPE, np.float32)
    d1[1] = 3.0
    value = losses.discriminator_loss(d_real_true=jnp.asarray(d1), d_real_false=jnp.zeros(PATCH_SHAPE),
                                      d_fake=jnp.zeros(PATCH_SHAPE))
    assert float(value) == pytest.approx(0.5 * 2.0)


def test_generator_adversarial_loss():
    assert float(losses.generator_adversarial_loss(d_fake=jnp.full(PATCH_SHAPE, 0.5))) == pytest.approx(0.125)
    assert float(losses.generator_adversarial_loss(d_fake=jnp.ones(PATCH_SHAPE))) == 0.0


def test_identity_feature_loss_sums_the_map_and_means_the_batch():
    source = jnp.zeros((2, 13, 13, 256))
    generated = np.zeros((2, 13, 13, 256), np.float32)
    generated[0] = 1.0  # sum of squares 13*13*256 = 43264
    generated[1] = 2.0  # 4 * 43264 = 173056
    value = losses.identity_feature_loss(generated_features=jnp.asarray(generated), source_features=source)
    assert float(value) == pytest.approx((43264 + 173056) / 2)


def test_age_classification_loss_uniform_logits_is_log5():
    value = losses.age_classification_loss(logits=jnp.zeros((4, 5)), age_group=jnp.array([0, 1, 2, 4]))
    assert float(value) == pytest.approx(math.log(5.0), rel=1e-6)


def test_age_classification_loss_picks_the_target_group():
    # logits [ln 3, 0, 0, 0, 0]: p(group 0) = 3/7, p(others) = 1/7
    logits = jnp.array([[math.log(3.0), 0, 0, 0, 0]] * 2)
    value = losses.age_classification_loss(logits=logits, age_group=jnp.array([0, 2]))
    assert float(value) == pytest.approx(0.5 * (-math.log(3 / 7) - math.log(1 / 7)), rel=1e-6)


def test_pixel_loss_is_the_mean_absolute_difference():
    source = jnp.zeros((2, 4, 4, 3))
    generated = np.zeros((2, 4, 4, 3), np.float32)
    generated[0, 0, 0, 0] = 0.5  # one element of 96 differs by 0.5
    generated[1, :, :, 2] = -1.0  # 16 elements differ by 1.0
    value = losses.pixel_loss(generated=jnp.asarray(generated), source=source)
    assert float(value) == pytest.approx((0.5 + 16 * 1.0) / 96, rel=1e-6)
