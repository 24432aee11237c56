"""InceptionV3 for FID, exactly as pytorch-fid's `FIDInceptionV3` (pool3, 2048-d features).

pytorch-fid (`pytorch_fid/inception.py`, `fid_inception_v3()`) ports the TensorFlow FID
graph (inception-2015-12-05) onto torchvision's InceptionV3 with these differences, all
reproduced here: Mixed_5b/c/d, 6b-e, 7b average-pool with count_include_pad=False (TF's
average pool ignores padding), Mixed_7c max-pools instead, 1008 classes, no aux logits.
Every conv is BasicConv2d: conv without bias, BatchNorm (eps 1e-3, running statistics),
ReLU. Flax module names are the torch state-dict names (`Mixed_5b/branch1x1/conv`), so
`ipcgan_jax.weights.fid_inception` maps pytorch-fid's weights file onto them one to one.

Input as pytorch-fid's `InceptionV3([3])` with resize_input and normalize_input: RGB
(N, H, W, 3), uint8 or float in [0, 1]; bilinear resize to 299 x 299 (half-pixel centres,
no antialiasing: `F.interpolate(..., align_corners=False)`), then scaled to [-1, 1].
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

INPUT_SIZE = 299
FEATURES = 2048

# FID numbers are compared across implementations: full float32 convolutions (no TF32 /
# bf16 passes on accelerators).
_PRECISION = jax.lax.Precision.HIGHEST


def preprocess_images(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
    """uint8 or [0, 1] float RGB (N, H, W, 3) -> float32 (N, size, size, 3) in [-1, 1]."""
    pixels = images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images.astype(jnp.float32)
    if pixels.shape[1:3] != (size, size):
        # Linear kernel without antialiasing = torch's bilinear (align_corners=False,
        # source coordinates clamped at the border) for up- and downscaling alike.
        pixels = jax.image.resize(pixels, (pixels.shape[0], size, size, pixels.shape[3]), "linear",
                                  antialias=False, precision=_PRECISION)
    return 2.0 * pixels - 1.0


def _avg_pool_excluding_padding(x: jax.Array) -> jax.Array:
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


class BasicConv2d(nn.Module):
    """torchvision's BasicConv2d: conv (no bias) -> BatchNorm(eps 1e-3) -> ReLU."""

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(self.features, self.kernel_size, self.strides, padding=[(p, p) for p in self.padding],
                    use_bias=False, precision=_PRECISION, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
        return nn.relu(x)


class InceptionA(nn.Module):
    """FIDInceptionA (Mixed_5b/c/d)."""

    pool_features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        branch1x1 = BasicConv2d(64, (1, 1), name="branch1x1")(x)
        branch5x5 = BasicConv2d(48, (1, 1), name="branch5x5_1")(x)
        branch5x5 = BasicConv2d(64, (5, 5), padding=(2, 2), name="branch5x5_2")(branch5x5)
        branch3x3dbl = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
        branch3x3dbl = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
        branch3x3dbl = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(branch3x3dbl)
        branch_pool = BasicConv2d(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_excluding_padding(x))
        return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(nn.Module):
    """torchvision's InceptionB (Mixed_6a), unpatched in pytorch-fid."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        branch3x3 = BasicConv2d(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
        branch3x3dbl = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
        branch3x3dbl = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
        branch3x3dbl = BasicConv2d(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(branch3x3dbl)
        branch_pool = nn.max_pool(x, (3, 3), strides=(2, 2))
        return jnp.concatenate([branch3x3, branch3x3dbl, branch_pool], axis=-1)


class InceptionC(nn.Module):
    """FIDInceptionC (Mixed_6b-e)."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c7 = self.channels_7x7
        branch1x1 = BasicConv2d(192, (1, 1), name="branch1x1")(x)
        branch7x7 = BasicConv2d(c7, (1, 1), name="branch7x7_1")(x)
        branch7x7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(branch7x7)
        branch7x7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(branch7x7)
        branch7x7dbl = BasicConv2d(c7, (1, 1), name="branch7x7dbl_1")(x)
        branch7x7dbl = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(branch7x7dbl)
        branch7x7dbl = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(branch7x7dbl)
        branch7x7dbl = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(branch7x7dbl)
        branch7x7dbl = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(branch7x7dbl)
        branch_pool = BasicConv2d(192, (1, 1), name="branch_pool")(_avg_pool_excluding_padding(x))
        return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(nn.Module):
    """torchvision's InceptionD (Mixed_7a), unpatched in pytorch-fid."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        branch3x3 = BasicConv2d(192, (1, 1), name="branch3x3_1")(x)
        branch3x3 = BasicConv2d(320, (3, 3), strides=(2, 2), name="branch3x3_2")(branch3x3)
        branch7x7x3 = BasicConv2d(192, (1, 1), name="branch7x7x3_1")(x)
        branch7x7x3 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(branch7x7x3)
        branch7x7x3 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(branch7x7x3)
        branch7x7x3 = BasicConv2d(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(branch7x7x3)
        branch_pool = nn.max_pool(x, (3, 3), strides=(2, 2))
        return jnp.concatenate([branch3x3, branch7x7x3, branch_pool], axis=-1)


class InceptionE(nn.Module):
    """FIDInceptionE_1 (Mixed_7b, average pool without padding) or FIDInceptionE_2
    (Mixed_7c, max pool: a quirk of the TF FID graph that pytorch-fid keeps)."""

    max_pool: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        branch1x1 = BasicConv2d(320, (1, 1), name="branch1x1")(x)
        branch3x3 = BasicConv2d(384, (1, 1), name="branch3x3_1")(x)
        branch3x3 = jnp.concatenate([
            BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(branch3x3),
            BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(branch3x3)], axis=-1)
        branch3x3dbl = BasicConv2d(448, (1, 1), name="branch3x3dbl_1")(x)
        branch3x3dbl = BasicConv2d(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
        branch3x3dbl = jnp.concatenate([
            BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(branch3x3dbl),
            BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(branch3x3dbl)], axis=-1)
        if self.max_pool:
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        else:
            pooled = _avg_pool_excluding_padding(x)
        branch_pool = BasicConv2d(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1)


class FIDInceptionV3(nn.Module):
    """images (N, H, W, 3) uint8 or [0, 1] float -> pool3 features (N, 2048) float32."""

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = preprocess_images(images)
        x = BasicConv2d(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
        x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
        x = BasicConv2d(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
        x = InceptionA(32, name="Mixed_5b")(x)
        x = InceptionA(64, name="Mixed_5c")(x)
        x = InceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        x = InceptionC(128, name="Mixed_6b")(x)
        x = InceptionC(160, name="Mixed_6c")(x)
        x = InceptionC(160, name="Mixed_6d")(x)
        x = InceptionC(192, name="Mixed_6e")(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE(max_pool=False, name="Mixed_7b")(x)
        x = InceptionE(max_pool=True, name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))
