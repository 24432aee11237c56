"""Input scalings of the original code (docs/faithfulness.md §8), in JAX.

Three paths feed the networks: the generator and AlexNet get RGB 0..255 minus the Caffe
mean `constants.CAFFE_MEAN_BGR` (BGR values subtracted from the RGB channels, as the
original did), the discriminator gets [-1, 1]. Resizes are TF1's `resize_bilinear(align_corners=False)` (no half-pixel
centres, no antialiasing); `legacy_resize_bilinear` reproduces it exactly, so the
generator output reaches AlexNet as it did in the original.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ipcgan_jax.constants import CAFFE_MEAN_BGR
from ipcgan_jax.data.legacy_resize import legacy_source_coords


def legacy_resize_bilinear(images: jax.Array, height: int, width: int) -> jax.Array:
    """TF1 `tf.image.resize_bilinear(images, (height, width), align_corners=False)`.

    images: (N, H, W, C). Interpolates along x first, then y, in the order of TF's CPU
    kernel, so results agree with TF to float round-off. Differentiable: the gradient is
    the resize's adjoint as two small matrix products (`_resize_adjoint`).
    """
    images = images.astype(jnp.promote_types(images.dtype, jnp.float32))
    if images.shape[1:3] == (height, width):
        return images
    return _legacy_resize(images, height, width)


def _interpolation_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size): row o holds the weights of output coordinate o on the inputs."""
    low, high, fraction = legacy_source_coords(in_size, out_size)
    matrix = np.zeros((out_size, in_size), np.float32)
    np.add.at(matrix, (np.arange(out_size), low), 1.0 - fraction)
    np.add.at(matrix, (np.arange(out_size), high), fraction)
    return matrix


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _legacy_resize(images: jax.Array, height: int, width: int) -> jax.Array:
    _, in_h, in_w, _ = images.shape
    y_lo, y_hi, fy = legacy_source_coords(in_h, height)
    x_lo, x_hi, fx = legacy_source_coords(in_w, width)
    fx = jnp.asarray(fx, images.dtype)[None, None, :, None]
    fy = jnp.asarray(fy, images.dtype)[None, :, None, None]
    top_rows, bottom_rows = images[:, y_lo], images[:, y_hi]
    top = top_rows[:, :, x_lo] + (top_rows[:, :, x_hi] - top_rows[:, :, x_lo]) * fx
    bottom = bottom_rows[:, :, x_lo] + (bottom_rows[:, :, x_hi] - bottom_rows[:, :, x_lo]) * fx
    return top + (bottom - top) * fy


def _legacy_resize_fwd(images: jax.Array, height: int, width: int):
    return _legacy_resize(images, height, width), images.shape


def _resize_adjoint(height: int, width: int, shape: tuple, cotangent: jax.Array):
    """The resize is linear, out = Ry x Rx^T per image and channel, so its gradient is
    Ry^T g Rx: two matrix products. Autodiff of the gathers gives the same sums as
    scatter-adds, which ran 5-6% of the demo's step on a CPU (benchmarks/README.md)."""
    _, in_h, in_w, _ = shape
    rows = jnp.asarray(_interpolation_matrix(in_h, height), cotangent.dtype)
    cols = jnp.asarray(_interpolation_matrix(in_w, width), cotangent.dtype)
    along_y = jnp.einsum("oh,nowc->nhwc", rows, cotangent, precision=jax.lax.Precision.HIGHEST)
    return (jnp.einsum("pw,nhpc->nhwc", cols, along_y, precision=jax.lax.Precision.HIGHEST),)


_legacy_resize.defvjp(_legacy_resize_fwd, _resize_adjoint)


def pixels_to_generator_input(pixels: jax.Array, size: int) -> jax.Array:
    """RGB 0..255 (any size) -> generator input: resized to `size`, minus the mean."""
    resized = legacy_resize_bilinear(pixels, size, size)
    return resized - jnp.asarray(CAFFE_MEAN_BGR, resized.dtype)


def generator_input_to_unit_range(images: jax.Array) -> jax.Array:
    """Generator input (0..255 minus the mean) -> the same image in [-1, 1], G's output range."""
    return (images.astype(jnp.float32) + jnp.asarray(CAFFE_MEAN_BGR, jnp.float32)) / 127.5 - 1.0


def pixels_to_alexnet_input(pixels: jax.Array, size: int = 227) -> jax.Array:
    """RGB 0..255 (any size) -> AlexNet input: resized to `size`, minus the mean."""
    return pixels_to_generator_input(pixels, size)


def pixels_to_discriminator_input(pixels: jax.Array, size: int) -> jax.Array:
    """RGB 0..255 (any size) -> discriminator input: resized to `size`, in [-1, 1]."""
    return legacy_resize_bilinear(pixels, size, size) / 127.5 - 1.0


def generator_output_to_alexnet_input(generated: jax.Array, size: int = 227) -> jax.Array:
    """G's tanh output in [-1, 1] -> AlexNet input: (x + 1) * 127.5, resized, minus the mean."""
    return pixels_to_alexnet_input((generated.astype(jnp.float32) + 1.0) * 127.5, size)


def generator_output_to_pixels(generated: jax.Array) -> jax.Array:
    """G's output in [-1, 1] -> uint8 RGB, clipped (no per-image min-max stretching)."""
    return jnp.clip(jnp.round((generated + 1.0) * 127.5), 0, 255).astype(jnp.uint8)
