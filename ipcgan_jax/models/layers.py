"""Layers shared by the IPCGAN networks, reproducing the original TensorFlow 1 ops.

TF "SAME" padding is `jax.lax`'s "SAME" (odd padding goes bottom/right), so plain
`flax.linen.Conv` matches `tf.nn.conv2d`. What Flax has no exact twin for lives here:
TF1's zero-debiased BatchNorm and `tf.nn.conv2d_transpose` with TF's kernel layout.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ipcgan_jax.constants import CONV_IMPLS
from ipcgan_jax.models import onednn
from ipcgan_jax.models.conv_args import check_nhwc_without_dilation

Dtype = Any

# Official initialisers (docs/faithfulness.md §3): conv weights truncated normal sd 0.02
# (the sd of the untruncated normal, cut at 2 sd, as tf.truncated_normal), transposed conv
# normal sd 0.02.
conv_init = nn.initializers.truncated_normal(stddev=0.02)
deconv_init = nn.initializers.normal(stddev=0.02)


class TFBatchNorm(nn.Module):
    """BatchNorm as the original `batch_norm()`.

    Batch statistics over every axis but the last, biased variance, `epsilon` 1e-3.
    The moving averages are TF1's zero-debiased ones (`assign_moving_average(...,
    zero_debias=True)`): `biased_*` shadows start at 0 and the published `mean`/`var`
    are shadow / (1 - decay**num_updates), so the initial variance of 1 is discarded at
    the first update. Statistics update whenever the `batch_stats` collection is mutable
    and batch statistics are in use.

    always_batch_stats: the residual-block BNs of the original use batch statistics
      even in test mode (docs/faithfulness.md §4, the quirk).
    """

    epsilon: float = 1e-3
    decay: float = 0.9
    always_batch_stats: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
        stat = lambda name, fill: self.variable(  # noqa: E731
            "batch_stats", name, lambda: jnp.full((channels,), fill, jnp.float32))
        mean = stat("mean", 0.0)
        var = stat("var", 1.0)
        biased_mean = stat("biased_mean", 0.0)
        biased_var = stat("biased_var", 0.0)
        num_updates = self.variable("batch_stats", "num_updates", lambda: jnp.zeros((), jnp.float32))

        if train or self.always_batch_stats:
            x32 = x.astype(jnp.float32)
            axes = tuple(range(x.ndim - 1))
            batch_mean = jnp.mean(x32, axis=axes)
            batch_var = jnp.mean(jnp.square(x32 - batch_mean), axis=axes)
            if train and self.is_mutable_collection("batch_stats") and not self.is_initializing():
                step = num_updates.value + 1.0
                keep = 1.0 - self.decay
                biased_mean.value = biased_mean.value - (biased_mean.value - batch_mean) * keep
                biased_var.value = biased_var.value - (biased_var.value - batch_var) * keep
                debias = 1.0 - self.decay ** step
                mean.value = biased_mean.value / debias
                var.value = biased_var.value / debias
                num_updates.value = step
            use_mean, use_var = batch_mean, batch_var
        else:
            use_mean, use_var = mean.value, var.value
        inv = jax.lax.rsqrt(use_var + self.epsilon) * scale
        shift = bias - use_mean * inv
        return (x * inv.astype(x.dtype) + shift.astype(x.dtype)).astype(self.dtype)


def conv_im2col(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                padding: str | Sequence[tuple[int, int]], lhs_dilation: Sequence[int] | None = None,
                rhs_dilation: Sequence[int] | None = None, dimension_numbers: Any = None,
                feature_group_count: int = 1, precision: Any = None,
                preferred_element_type: Any = None) -> jax.Array:
    """`lax.conv_general_dilated` (NHWC, HWIO, no dilation) as patch extraction and one `dot`.

    A drop-in for `flax.linen.Conv(conv_general_dilated=...)`: the kh*kw shifted, strided
    views of the padded input are stacked into patches (N*H'*W', kh*kw*C) and multiplied
    by the kernel reshaped to (kh*kw*C, O); groups become a batched dot. Autodiff gives the
    weight gradient as patches^T @ dy (one large dot, where XLA's CPU conv weight gradient
    is slow) and the data gradient as dy @ W^T scattered back by the slices' transposes.
    The same function as the conv, up to float summation order.
    """
    check_nhwc_without_dilation("conv_im2col", lhs, rhs, dimension_numbers, lhs_dilation, rhs_dilation)
    n, height, width, channels = lhs.shape
    kh, kw, group_channels, out_features = rhs.shape
    groups = feature_group_count
    if channels != group_channels * groups:
        raise ValueError(f"conv_im2col: input has {channels} channels, kernel expects "
                         f"{group_channels} x {groups} groups")
    sh, sw = window_strides
    # 'SAME' / 'VALID' as lax and TF pad them (the odd pixel bottom/right), or explicit pairs
    pads = (jax.lax.padtype_to_pads((height, width), (kh, kw), (sh, sw), padding)
            if isinstance(padding, str) else tuple(tuple(p) for p in padding))
    x = jnp.pad(lhs, ((0, 0), pads[0], pads[1], (0, 0)))
    out_h = (height + sum(pads[0]) - kh) // sh + 1
    out_w = (width + sum(pads[1]) - kw) // sw + 1
    views = [jax.lax.slice(x, (0, i, j, 0), (n, i + (out_h - 1) * sh + 1, j + (out_w - 1) * sw + 1, channels),
                           (1, sh, sw, 1)) for i in range(kh) for j in range(kw)]
    rows = n * out_h * out_w
    patches = jnp.stack(views, axis=3).reshape(rows, kh * kw, groups, group_channels)
    if groups == 1:
        y = jnp.dot(patches.reshape(rows, -1), rhs.reshape(-1, out_features), precision=precision,
                    preferred_element_type=preferred_element_type)
    else:
        patches = patches.transpose(2, 0, 1, 3).reshape(groups, rows, kh * kw * group_channels)
        kernel = rhs.reshape(kh * kw * group_channels, groups, out_features // groups).transpose(1, 0, 2)
        y = jnp.einsum("grk,gko->rgo", patches, kernel, precision=precision,
                       preferred_element_type=preferred_element_type)
    return y.reshape(n, out_h, out_w, out_features)


# A dot with this few output columns runs far below XLA's own conv on a CPU (G's last 7x7
# conv to 3 channels: 8.6x slower as im2col, benchmarks/bench_conv_layers.py), so such
# convs keep XLA's path under 'im2col'.
IM2COL_MIN_FEATURES = 16


def conv_per_group(conv: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """`conv` (NHWC inputs, HWIO kernels) with a grouped conv run as one ungrouped conv per
    group, concatenated: the same function, the form of AlexNet's TF port. On a CPU, XLA's
    grouped conv runs far below the same work as separate convs (benchmarks/README.md,
    "Grouped convs one group at a time")."""

    def grouped(lhs: jax.Array, rhs: jax.Array, *args: Any, feature_group_count: int = 1,
                **kwargs: Any) -> jax.Array:
        if feature_group_count == 1:
            return conv(lhs, rhs, *args, **kwargs)
        inputs = jnp.split(lhs, feature_group_count, axis=3)
        kernels = jnp.split(rhs, feature_group_count, axis=3)
        return jnp.concatenate([conv(x, w, *args, **kwargs) for x, w in zip(inputs, kernels)], axis=3)

    return grouped


@functools.cache
def _warn_onednn_missing() -> None:
    logging.warning("conv_impl 'onednn': no oneDNN library at %s (%s); running im2col instead, "
                    "the same function, about 1.3x slower", onednn.library_path(), onednn.INSTALL_HINT)


def conv_function(impl: str, features: int) -> Callable[..., jax.Array]:
    """The `conv_general_dilated` of a conv with `features` outputs under `impl`.

    'xla': `lax.conv_general_dilated`. 'im2col': `conv_im2col` where the conv has at least
    IM2COL_MIN_FEATURES outputs. 'auto': 'im2col' on a CPU backend, 'xla' on accelerators
    (cuDNN). 'xla_per_group': XLA's conv, grouped convs one group at a time
    (`conv_per_group`). 'onednn': oneDNN's conv on a CPU backend (`onednn.conv_onednn`; 'auto'
    where its library is not installed, with a warning), XLA's conv elsewhere. The same
    function in every case, up to float summation order. On a CPU, XLA's grouped convs, the
    sub-pixel deconvs' and the strided convs' weight gradients run 2-10x below PyTorch's;
    as patches and one dot they come near it, and oneDNN runs them at PyTorch's rate
    (benchmarks/bench_conv_layers.py, bench_step.py).
    """
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")
    if impl == "auto":
        impl = "im2col" if jax.default_backend() == "cpu" else "xla"
    if impl == "xla_per_group":
        return conv_per_group(jax.lax.conv_general_dilated)
    if impl == "onednn":
        if jax.default_backend() != "cpu":
            return jax.lax.conv_general_dilated
        if not onednn.is_available():
            _warn_onednn_missing()
            return conv_function("auto", features)
        return onednn.conv_onednn
    return conv_im2col if impl == "im2col" and features >= IM2COL_MIN_FEATURES else jax.lax.conv_general_dilated


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def max_pool_masked(x: jax.Array, window: int, stride: int) -> jax.Array:
    """`nn.max_pool(x, (window, window), (stride, stride), 'VALID')` on NHWC whose gradient
    is built from masks instead of XLA's select-and-scatter (2-4x slower on a CPU; AlexNet's
    three pools in the paper's batch-32 step: 0.41 s against 0.13 s, benchmarks/README.md). The same
    gradient, the first maximum of each window in row-major order taking it, as XLA's;
    where windows overlap, its sum may round differently."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1), "VALID")


def _max_pool_masked_fwd(x: jax.Array, window: int, stride: int):
    pooled = max_pool_masked(x, window, stride)
    return pooled, (x, pooled)


def _max_pool_masked_bwd(window: int, stride: int, residuals, grad: jax.Array):
    x, pooled = residuals
    n, h, w, c = x.shape
    span_h, span_w = stride * (pooled.shape[1] - 1) + 1, stride * (pooled.shape[2] - 1) + 1
    taken = jnp.zeros(pooled.shape, bool)  # windows whose maximum has been found
    dx = jnp.zeros_like(x)
    for i in range(window):  # row-major over the window: the first maximum wins, as XLA's `ge` select
        for j in range(window):
            tap = jax.lax.slice(x, (0, i, j, 0), (n, i + span_h, j + span_w, c), (1, stride, stride, 1))
            hit = (tap == pooled) & ~taken
            taken = taken | hit
            # Back to the input positions of tap (i, j): interior padding spreads by the stride.
            dx = dx + jax.lax.pad(jnp.where(hit, grad, 0).astype(x.dtype), jnp.zeros((), x.dtype),
                                  ((0, 0, 0), (i, h - i - span_h, stride - 1), (j, w - j - span_w, stride - 1), (0, 0, 0)))
    return (dx,)


max_pool_masked.defvjp(_max_pool_masked_fwd, _max_pool_masked_bwd)


def max_pool_function(impl: str) -> Callable[[jax.Array, int, int], jax.Array]:
    """A VALID square max pool `(x, window, stride)` under conv_impl `impl`: the masked
    gradient (`max_pool_masked`) with the CPU conv paths ('onednn', 'im2col', 'auto' on a
    CPU), XLA's reduce-window and select-and-scatter otherwise."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")
    if impl in ("onednn", "im2col", "auto") and jax.default_backend() == "cpu":
        return max_pool_masked
    return lambda x, window, stride: nn.max_pool(x, (window, window), strides=(stride, stride), padding="VALID")


DECONV_IMPLS = ("subpixel", "conv_transpose", "resize_conv")  # the first two: the same function


def _subpixel_taps(kernel_size: int, stride: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Where each tap of a SAME transposed conv lands in its sub-pixel form.

    Output row s*p + a (phase a) of `conv2d_transpose(SAME)` sums input rows p + d times
    kernel row kh = a + pad_before - s*d (the adjoint of a SAME conv from s*H to H with
    pad_before = (k - s) // 2). Returns per (offset index, phase) the kernel row (`taps`),
    whether it exists (`valid`), and the smallest and largest offset d.
    """
    pad_before = max(kernel_size - stride, 0) // 2
    offsets = [(a + pad_before - kh) // stride for a in range(stride) for kh in range(kernel_size)
               if (a + pad_before - kh) % stride == 0]
    d_min, d_max = min(offsets), max(offsets)
    taps = np.zeros((d_max - d_min + 1, stride), np.int32)
    valid = np.zeros((d_max - d_min + 1, stride), bool)
    for t, d in enumerate(range(d_min, d_max + 1)):
        for a in range(stride):
            kh = a + pad_before - stride * d
            if 0 <= kh < kernel_size:
                taps[t, a], valid[t, a] = kh, True
    return taps, valid, d_min, d_max


def conv_transpose_subpixel(x: jax.Array, kernel: jax.Array, stride: int,
                            conv: Callable[..., jax.Array] = jax.lax.conv_general_dilated) -> jax.Array:
    """`tf.nn.conv2d_transpose(x, kernel, SAME)` as one stride-1 conv and a depth-to-space.

    kernel: TF layout (k, k, out, in). Each output phase (a, b) of the strided transposed
    conv is an ordinary conv of the input with a sub-kernel of the taps that land on it;
    stacking the phases as output channels turns the whole op into one dense conv whose
    weight gradient is a plain conv too (XLA's CPU transposed-conv weight gradient is slow).
    The same function as `lax.conv_transpose`, up to float summation order.
    """
    k, _, out_features, in_features = kernel.shape
    taps, valid, d_min, d_max = _subpixel_taps(k, stride)
    size = taps.shape[0]
    # sub[ty, tx, in, a, b, out] = kernel[taps[ty, a], taps[tx, b], out, in] where valid
    rows = kernel[taps]                                   # (ty, a, k, out, in)
    sub = rows[:, :, taps]                                # (ty, a, tx, b, out, in)
    mask = (valid[:, :, None, None] & valid[None, None, :, :]).astype(kernel.dtype)
    sub = sub * mask[..., None, None]
    sub = sub.transpose(0, 2, 5, 1, 3, 4).reshape(size, size, in_features, stride * stride * out_features)
    padded = jnp.pad(x, ((0, 0), (-d_min, max(d_max, 0)), (-d_min, max(d_max, 0)), (0, 0)))
    y = conv(padded, sub, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    n, h, w, _ = y.shape
    y = y.reshape(n, h, w, stride, stride, out_features).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, h * stride, w * stride, out_features)


class ConvTransposeSame(nn.Module):
    """`tf.nn.conv2d_transpose(x, kernel, output = input * stride, padding="SAME")`.

    The kernel keeps TF's layout (kh, kw, out, in) so original weights load unchanged.
    impl: 'subpixel' (default, one dense conv per layer: faster on CPU, see
      `conv_transpose_subpixel`) or 'conv_transpose' (`lax.conv_transpose`); the same
      function with the same parameters. 'resize_conv' is a variant, not the original's
      function: nearest-neighbour upsampling then a stride-1 conv with the same kernel,
      whose every output pixel sums the same number of kernel taps, so it cannot draw the
      checkerboard a stride-2, 3x3 transposed conv draws (Odena et al., Distill 2016).
    conv_impl: how the dense conv of 'subpixel' and 'resize_conv' runs (`conv_function`).
    """

    features: int
    kernel_size: int = 3
    stride: int = 2
    dtype: Dtype = jnp.float32
    impl: str = "subpixel"
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.impl not in DECONV_IMPLS:
            raise ValueError(f"ConvTransposeSame.impl must be one of {DECONV_IMPLS}, got {self.impl!r}")
        k = self.kernel_size
        kernel = self.param("kernel", deconv_init, (k, k, self.features, x.shape[-1]), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        outputs = self.features * self.stride ** 2 if self.impl == "subpixel" else self.features
        conv = conv_function(self.conv_impl, outputs)
        if self.impl == "subpixel":
            y = conv_transpose_subpixel(x, kernel, self.stride, conv)
        elif self.impl == "resize_conv":
            upsampled = jnp.repeat(jnp.repeat(x, self.stride, axis=1), self.stride, axis=2)
            y = conv(upsampled, kernel.transpose(0, 1, 3, 2), (1, 1), "SAME",
                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        else:
            y = jax.lax.conv_transpose(
                x, kernel, (self.stride, self.stride), "SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=True)
        return y + bias.astype(self.dtype)


def one_hot_maps(age_group: jax.Array, num_groups: int, height: int, width: int,
                 dtype: Dtype) -> jax.Array:
    """Condition maps (N, H, W, num_groups): channel `age_group` is 1, the rest 0."""
    one_hot = jax.nn.one_hot(age_group, num_groups, dtype=dtype)
    return jnp.broadcast_to(one_hot[:, None, None, :], (age_group.shape[0], height, width, num_groups))


def group_weights(condition: jax.Array, num_groups: int, dtype: Dtype) -> jax.Array:
    """(N, num_groups) weights of a condition: one-hot rows of int age groups (N,), or float
    group weights (N, num_groups) as given (ages between groups:
    `ipcgan_jax.continuous_age.age_condition`)."""
    if condition.ndim == 1:
        return jax.nn.one_hot(condition, num_groups, dtype=dtype)
    if condition.ndim != 2 or condition.shape[1] != num_groups:
        raise ValueError(f"condition must be age groups (N,) or group weights (N, {num_groups}), "
                         f"got shape {condition.shape}")
    return condition.astype(dtype)


def _same_tap_mask(size: int, kernel_size: int) -> np.ndarray:
    """(size, kernel_size) 0/1: whether tap i of a stride-1 SAME conv at output position p
    reads inside the input (not the zero padding)."""
    pad_before = (kernel_size - 1) // 2
    source = np.arange(size)[:, None] - pad_before + np.arange(kernel_size)[None, :]
    return ((source >= 0) & (source < size)).astype(np.float32)


class ConditionedConv(nn.Module):
    """A stride-1 SAME conv of the images concatenated with condition maps (each group's
    `group_weights` filling a channel), computed as a conv
    of the images alone plus the condition maps' share.

    The maps are constant over the image, so their share at a pixel is, per group, the
    group's weight times the sum of that group's kernel taps that fall inside the image
    (zero padding drops the rest): a separable 0/1 mask of taps in rows and in columns.
    That share is two small matmuls instead of num_groups more input channels in the conv
    (G's first conv: 8 input channels become 3). The same function as the conv of the
    concatenation, up to float summation order, with the same parameters (`kernel` of
    shape (k, k, channels + num_groups, features), `bias`) as `flax.linen.Conv`, so
    checkpoints and converted weights are unchanged.
    """

    features: int
    kernel_size: int
    num_groups: int
    dtype: Dtype = jnp.float32
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, images: jax.Array, condition: jax.Array) -> jax.Array:
        _, height, width, channels = images.shape
        k = self.kernel_size
        kernel = self.param("kernel", conv_init, (k, k, channels + self.num_groups, self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        kernel = kernel.astype(self.dtype)
        image_kernel, group_kernel = kernel[:, :, :channels], kernel[:, :, channels:]
        out = conv_function(self.conv_impl, self.features)(
            images.astype(self.dtype), image_kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        # Each example's condition kernel (its groups' taps, weighted), then its taps summed
        # over the in-image window: columns first, then rows (the cheap order: at batch 1
        # the share costs 0.3 ms at 128 px where summing per group first cost 7 ms).
        weights = group_weights(condition, self.num_groups, self.dtype)
        example_kernel = jnp.einsum("ng,ijgf->nijf", weights, group_kernel)
        cols = jnp.asarray(_same_tap_mask(width, k), self.dtype)
        rows = jnp.asarray(_same_tap_mask(height, k), self.dtype)
        share = jnp.einsum("yi,nixf->nyxf", rows, jnp.einsum("xj,nijf->nixf", cols, example_kernel))
        return out + share + bias.astype(self.dtype)
