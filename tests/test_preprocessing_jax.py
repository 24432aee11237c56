"""The JAX input scalings' gradients: G's output reaches AlexNet through TF1's legacy
bilinear resize, whose gradient is computed as the resize's adjoint (two matrix products)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ipcgan_jax import preprocessing
from ipcgan_jax.data.legacy_resize import legacy_source_coords


def _resize_by_gathers(images, height, width):
    """The resize written out with gathers, differentiated by JAX (scatter-adds)."""
    _, in_h, in_w, _ = images.shape
    y_lo, y_hi, fy = legacy_source_coords(in_h, height)
    x_lo, x_hi, fx = legacy_source_coords(in_w, width)
    fx, fy = jnp.asarray(fx)[None, None, :, None], jnp.asarray(fy)[None, :, None, None]
    top_rows, bottom_rows = images[:, y_lo], images[:, y_hi]
    top = top_rows[:, :, x_lo] + (top_rows[:, :, x_hi] - top_rows[:, :, x_lo]) * fx
    bottom = bottom_rows[:, :, x_lo] + (bottom_rows[:, :, x_hi] - bottom_rows[:, :, x_lo]) * fx
    return top + (bottom - top) * fy


@pytest.mark.parametrize("in_h,in_w,height,width", [(64, 64, 115, 115), (128, 128, 227, 227), (7, 5, 3, 11)])
def test_resize_gradient_is_the_adjoint_of_the_resize(in_h, in_w, height, width):
    rng = np.random.default_rng(in_h + width)
    images = jnp.asarray(rng.normal(size=(2, in_h, in_w, 3)), jnp.float32)
    cotangent = jnp.asarray(rng.normal(size=(2, height, width, 3)), jnp.float32)
    resized, vjp = jax.vjp(lambda x: preprocessing.legacy_resize_bilinear(x, height, width), images)
    np.testing.assert_array_equal(np.asarray(resized), np.asarray(_resize_by_gathers(images, height, width)))
    (gradient,) = vjp(cotangent)
    (expected,) = jax.vjp(lambda x: _resize_by_gathers(x, height, width), images)[1](cotangent)
    np.testing.assert_allclose(np.asarray(gradient), np.asarray(expected), rtol=0, atol=1e-6 * np.abs(expected).max())
    # The adjoint identity <R x, g> = <x, R^T g> on the forward pass alone (float64 sums).
    left = np.sum(np.asarray(resized, np.float64) * np.asarray(cotangent, np.float64))
    right = np.sum(np.asarray(images, np.float64) * np.asarray(gradient, np.float64))
    assert abs(left - right) < 1e-5 * max(abs(left), 1.0)


def test_same_size_resize_is_the_identity_with_an_identity_gradient():
    images = jnp.asarray(np.random.default_rng(0).normal(size=(1, 4, 4, 3)), jnp.float32)
    gradient = jax.grad(lambda x: jnp.sum(preprocessing.legacy_resize_bilinear(x, 4, 4) * 3.0))(images)
    np.testing.assert_array_equal(np.asarray(gradient), np.full(images.shape, 3.0, np.float32))
