"""Faster formulations of layers (chosen for CPU speed) against the plain ones they replace:
the same function with the same parameters, values and gradients, to float32 round-off."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ipcgan_jax.models import Generator
from ipcgan_jax.models.layers import ConvTransposeSame, conv_transpose_subpixel


def _lax_conv_transpose(x, kernel, stride):
    return jax.lax.conv_transpose(x, kernel, (stride, stride), "SAME",
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=True)


def _relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-30))


@pytest.mark.parametrize("kernel_size,stride", [(3, 2), (4, 2), (3, 3), (3, 1)])
def test_subpixel_transposed_conv_equals_lax_values_and_gradients(kernel_size, stride):
    rng = np.random.default_rng(kernel_size * 10 + stride)
    x = jnp.asarray(rng.normal(size=(2, 5, 7, 6)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, 4, 6)), jnp.float32)
    expected = _lax_conv_transpose(x, kernel, stride)
    actual = conv_transpose_subpixel(x, kernel, stride)
    assert actual.shape == expected.shape == (2, 5 * stride, 7 * stride, 4)
    assert _relative_error(actual, expected) < 1e-6
    cotangent = jnp.asarray(rng.normal(size=expected.shape), jnp.float32)
    loss = lambda f: lambda x, k: jnp.sum(f(x, k, stride) * cotangent)  # noqa: E731
    grads_expected = jax.grad(loss(_lax_conv_transpose), argnums=(0, 1))(x, kernel)
    grads_actual = jax.grad(loss(conv_transpose_subpixel), argnums=(0, 1))(x, kernel)
    for name, a, e in zip(("input", "kernel"), grads_actual, grads_expected):
        assert _relative_error(a, e) < 1e-5, name


def test_subpixel_matches_a_direct_scatter_of_the_taps():
    """Independent of lax: out[s*i + kh - pad, s*j + kw - pad] += x[i, j] @ kernel[kh, kw].T"""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 3, 4, 2))
    kernel = rng.normal(size=(3, 3, 5, 2))
    stride, pad = 2, 0  # TF SAME for k=3, s=2: (k - s) // 2 before
    out = np.zeros((1, 6, 8, 5))
    for i in range(3):
        for j in range(4):
            for kh in range(3):
                for kw in range(3):
                    r, c = stride * i + kh - pad, stride * j + kw - pad
                    if 0 <= r < 6 and 0 <= c < 8:
                        out[0, r, c] += kernel[kh, kw] @ x[0, i, j]
    actual = conv_transpose_subpixel(jnp.asarray(x, jnp.float32), jnp.asarray(kernel, jnp.float32), stride)
    assert _relative_error(actual, out) < 1e-6


def test_generator_deconv_impls_share_parameters_and_outputs():
    rng = np.random.default_rng(1)
    images = jnp.asarray(rng.uniform(-120, 130, (2, 16, 16, 3)), jnp.float32)
    age_group = jnp.asarray([1, 3])
    plain = Generator(base_features=4, num_res_blocks=1, deconv_impl="conv_transpose")
    fast = Generator(base_features=4, num_res_blocks=1, deconv_impl="subpixel")
    variables = plain.init(jax.random.key(0), images, age_group, train=True)
    assert jax.tree.map(jnp.shape, fast.init(jax.random.key(0), images, age_group, train=True)) == \
        jax.tree.map(jnp.shape, variables)
    for train in (True, False):
        expected = plain.apply(variables, images, age_group, train=train, mutable=["batch_stats"])[0]
        actual = fast.apply(variables, images, age_group, train=train, mutable=["batch_stats"])[0]
        assert _relative_error(actual, expected) < 1e-5


def test_unknown_deconv_impl_is_rejected():
    with pytest.raises(ValueError, match="impl"):
        ConvTransposeSame(4, impl="fft").init(jax.random.key(0), jnp.zeros((1, 4, 4, 2)))



def test_config_rejects_unknown_deconv_impl():
    from ipcgan_jax import configlib
    from tests.helpers import config_file

    config = config_file("g75_conv5")
    configlib.validate_config(config)
    config.model.generator.deconv_impl = "fft"
    with pytest.raises(configlib.ConfigError, match="deconv_impl"):
        configlib.validate_config(config)
