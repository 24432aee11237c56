"""Faster formulations of layers (chosen for CPU speed) against the plain ones they replace:
the same function with the same parameters, values and gradients, to float32 round-off."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ipcgan_jax.models import AlexNet, Discriminator, Generator, onednn
from ipcgan_jax.models.layers import (IM2COL_MIN_FEATURES, ConditionedConv, ConvTransposeSame, conv_function,
                                     conv_im2col, conv_per_group, conv_transpose_subpixel, max_pool_function,
                                     max_pool_masked)


def _lax_conv_transpose(x, kernel, stride):
    return jax.lax.conv_transpose(x, kernel, (stride, stride), "SAME",
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=True)


def _relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-30))


def _assert_same_values_and_gradients(fast, plain, x, kernel, rng) -> jax.Array:
    """fast(x, kernel) equals plain(x, kernel) to float32 round-off, and so do the gradients
    of both arguments under a random cotangent; returns the output. Compiled: run op by op,
    an im2col conv compiles each of its kh*kw slices and their transposes on its own."""
    expected = jax.jit(plain)(x, kernel)
    actual = jax.jit(fast)(x, kernel)
    assert actual.shape == expected.shape
    assert _relative_error(actual, expected) < 1e-6
    cotangent = jnp.asarray(rng.normal(size=expected.shape), jnp.float32)
    loss = lambda f: lambda x, k: jnp.sum(f(x, k) * cotangent)  # noqa: E731
    grads_expected = jax.jit(jax.grad(loss(plain), argnums=(0, 1)))(x, kernel)
    grads_actual = jax.jit(jax.grad(loss(fast), argnums=(0, 1)))(x, kernel)
    for name, a, e in zip(("input", "kernel"), grads_actual, grads_expected):
        assert _relative_error(a, e) < 1e-5, name
    return actual


@pytest.mark.parametrize("kernel_size,stride", [(3, 2), (4, 2), (3, 3), (3, 1)])
def test_subpixel_transposed_conv_equals_lax_values_and_gradients(kernel_size, stride):
    rng = np.random.default_rng(kernel_size * 10 + stride)
    x = jnp.asarray(rng.normal(size=(2, 5, 7, 6)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, 4, 6)), jnp.float32)
    actual = _assert_same_values_and_gradients(lambda x, k: conv_transpose_subpixel(x, k, stride),
                                               lambda x, k: _lax_conv_transpose(x, k, stride), x, kernel, rng)
    assert actual.shape == (2, 5 * stride, 7 * stride, 4)


@pytest.mark.parametrize("kernel_size,conv_impl,condition", [
    (7, "xla", np.array([0, 3, 4])), (7, "im2col", np.array([2, 2, 1])), (3, "xla", np.array([1, 0, 4])),
    (4, "xla", np.array([[0.0, 0.0, 0.85, 0.15, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.0, 0.0, 0.0]]))])
def test_conditioned_conv_equals_a_conv_of_images_and_condition_maps(kernel_size, conv_impl, condition):
    """G's first conv without the concatenation: the plain conv of concat(images, maps) with
    the same parameters, in value and in the gradients of images and kernel (one-hot and
    blended conditions; odd and even kernels; a non-square image, so rows and columns differ)."""
    rng = np.random.default_rng(kernel_size)
    images = jnp.asarray(rng.normal(size=(3, 9, 12, 3)) * 50, jnp.float32)
    layer = ConditionedConv(IM2COL_MIN_FEATURES, kernel_size, 5, conv_impl=conv_impl)
    variables = layer.init(jax.random.key(0), images, jnp.asarray(condition))
    assert jax.tree.map(jnp.shape, variables["params"]) == {
        "kernel": (kernel_size, kernel_size, 8, IM2COL_MIN_FEATURES), "bias": (IM2COL_MIN_FEATURES,)}
    kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, 8, IM2COL_MIN_FEATURES)), jnp.float32)
    bias = jnp.asarray(rng.normal(size=(IM2COL_MIN_FEATURES,)), jnp.float32)
    weights = np.eye(5, dtype=np.float32)[condition] if condition.ndim == 1 else condition.astype(np.float32)
    maps = jnp.asarray(np.broadcast_to(weights[:, None, None, :], (3, 9, 12, 5)))

    def plain(x, k):
        return jax.lax.conv_general_dilated(jnp.concatenate([x, maps], -1), k, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias

    def fast(x, k):
        return layer.apply({"params": {"kernel": k, "bias": bias}}, x, jnp.asarray(condition))

    _assert_same_values_and_gradients(fast, plain, images, kernel, rng)


def test_generator_takes_the_same_parameters_as_before_the_conditioned_conv():
    """G's conv1 keeps the parameters of a Flax conv over 3 + num_groups channels, so
    checkpoints written before, and converted original weights, load unchanged."""
    generator = Generator(base_features=4, num_res_blocks=1)
    variables = generator.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), jnp.zeros((1,), jnp.int32), train=True)
    assert jax.tree.map(jnp.shape, variables["params"]["conv1"]) == {"kernel": (7, 7, 8, 4), "bias": (4,)}


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


# (input size, in, out, kernel, stride, padding, groups): the kinds of conv the networks use
_IM2COL_CASES = [(9, 5, 4, 7, 1, "SAME", 1), (9, 4, 6, 3, 2, "SAME", 1), (6, 4, 3, 4, 1, "SAME", 1),
                 (8, 3, 4, 4, 2, "SAME", 1), (15, 3, 4, 11, 4, "VALID", 1), (7, 6, 8, 5, 1, "SAME", 2),
                 (5, 4, 6, 3, 1, ((1, 0), (2, 1)), 2), (5, 4, 6, 2, 1, "VALID", 1)]


@pytest.mark.parametrize("size,cin,cout,kernel_size,stride,padding,groups", _IM2COL_CASES)
def test_im2col_conv_equals_lax_values_and_gradients(size, cin, cout, kernel_size, stride, padding, groups):
    rng = np.random.default_rng(size * 100 + kernel_size)
    x = jnp.asarray(rng.normal(size=(2, size, size + 1, cin)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, cin // groups, cout)), jnp.float32)

    def conv(f):
        return lambda x, k: f(x, k, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                              feature_group_count=groups)

    _assert_same_values_and_gradients(conv(conv_im2col), conv(jax.lax.conv_general_dilated), x, kernel, rng)


@pytest.mark.parametrize("impl", ["im2col", "onednn"])
def test_conv_impl_matches_a_direct_sum_over_the_taps(impl):
    """Independent of lax: y[i, j] = sum over taps of x_padded[s*i + kh, s*j + kw] @ kernel[kh, kw]."""
    if impl == "onednn" and (jax.default_backend() != "cpu" or not onednn.is_available()):
        pytest.skip("oneDNN runs on a CPU backend, with the onednn-cpu-gomp wheel")
    conv = {"im2col": conv_im2col, "onednn": onednn.conv_onednn}[impl]
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 6, 5, 3))
    kernel = rng.normal(size=(4, 4, 3, 2))
    stride = 2
    padded = np.pad(x, ((0, 0), (1, 1), (1, 2), (0, 0)))  # TF SAME, k=4, s=2: 6 -> 3 rows, 5 -> 3 cols
    expected = np.zeros((1, 3, 3, 2))
    for i in range(3):
        for j in range(3):
            for kh in range(4):
                for kw in range(4):
                    expected[0, i, j] += padded[0, stride * i + kh, stride * j + kw] @ kernel[kh, kw]
    actual = conv(jnp.asarray(x, jnp.float32), jnp.asarray(kernel, jnp.float32), (stride, stride),
                  "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert _relative_error(actual, expected) < 1e-6


def test_im2col_conv_rejects_what_it_does_not_implement():
    x, kernel = jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 2))
    with pytest.raises(ValueError, match="NHWC"):
        conv_im2col(x, kernel, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
    with pytest.raises(ValueError, match="dilation"):
        conv_im2col(x, kernel, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    with pytest.raises(ValueError, match="channels"):
        conv_im2col(x, jnp.zeros((3, 3, 3, 2)), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("inner", [jax.lax.conv_general_dilated, conv_im2col], ids=["xla", "im2col"])
@pytest.mark.parametrize("groups,padding", [(2, "SAME"), (3, "VALID"), (2, ((1, 0), (2, 1))), (1, "SAME")])
def test_per_group_conv_equals_the_grouped_conv_in_values_and_gradients(inner, groups, padding):
    rng = np.random.default_rng(groups)
    x = jnp.asarray(rng.normal(size=(2, 7, 8, 2 * groups)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 2, 4 * groups)), jnp.float32)

    def conv(impl):
        return lambda x, k: impl(x, k, (1, 1), padding, feature_group_count=groups,
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))

    _assert_same_values_and_gradients(conv(conv_per_group(inner)), conv(jax.lax.conv_general_dilated),
                                      x, kernel, rng)


def test_alexnet_per_group_shares_parameters_and_activations_with_the_grouped_conv():
    """conv_impl 'xla_per_group' changes only how conv2, conv4 and conv5 run."""
    images = jnp.asarray(np.random.default_rng(3).uniform(-120, 130, (2, 67, 67, 3)), jnp.float32)
    widths = dict(conv_features=(8, 8, 8, 8, 8), fc_features=16, bottleneck_features=8, age_fc_features=16,
                  num_identities=20)
    grouped, per_group = AlexNet(**widths, conv_impl="xla"), AlexNet(**widths, conv_impl="xla_per_group")
    params = grouped.init(jax.random.key(0), images)["params"]
    assert jax.tree.map(jnp.shape, per_group.init(jax.random.key(0), images)["params"]) == \
        jax.tree.map(jnp.shape, params)
    expected = grouped.apply({"params": params}, images, outputs=("conv5", "age_logits"))
    actual = per_group.apply({"params": params}, images, outputs=("conv5", "age_logits"))
    for name in expected:
        assert _relative_error(actual[name], expected[name]) < 1e-5, name
    program = str(jax.make_jaxpr(lambda p: per_group.apply({"params": p}, images, outputs=("conv5",)))(params))
    assert "feature_group_count=2" not in program and "feature_group_count=1" in program


def _max_pool_gradient_by_loops(x: np.ndarray, grad: np.ndarray, window: int, stride: int) -> np.ndarray:
    """Each window's gradient to its first maximum in row-major order (np.argmax's rule)."""
    dx = np.zeros_like(x, dtype=np.float64)
    n, oh, ow, c = grad.shape
    for b, a, col, ch in np.ndindex(n, oh, ow, c):
        patch = x[b, a * stride:a * stride + window, col * stride:col * stride + window, ch]
        di, dj = np.unravel_index(np.argmax(patch), patch.shape)
        dx[b, a * stride + di, col * stride + dj, ch] += grad[b, a, col, ch]
    return dx


@pytest.mark.parametrize("inputs", ["normal", "relu", "ties"])
def test_masked_max_pool_equals_xla_values_and_gradients(inputs):
    """AlexNet's 3x3 stride-2 pools under the CPU paths: the same outputs, and the gradient
    to the first maximum of each window (XLA's rule) also where values tie."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 15, 13, 3)).astype(np.float32)
    if inputs == "relu":
        x = np.maximum(x, 0)  # ReLU's zeros tie in many windows
    elif inputs == "ties":
        x = np.round(x * 2) / 2  # few distinct values: equal maxima in most windows
    grad = rng.normal(size=(2, 7, 6, 3)).astype(np.float32)
    reference = lambda v: nn.max_pool(v, (3, 3), strides=(2, 2), padding="VALID")  # noqa: E731
    pooled, vjp = jax.vjp(lambda v: max_pool_masked(v, 3, 2), jnp.asarray(x))
    expected, xla_vjp = jax.vjp(reference, jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(pooled), np.asarray(expected))
    loops = _max_pool_gradient_by_loops(x, grad, 3, 2)
    np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(grad))[0]), loops, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(xla_vjp(jnp.asarray(grad))[0]), loops, rtol=1e-6, atol=1e-6)


def test_max_pool_function_picks_the_implementation():
    masked_on_cpu = max_pool_masked if jax.default_backend() == "cpu" else None
    for impl in ("onednn", "im2col", "auto"):
        assert (max_pool_function(impl) is max_pool_masked) == (masked_on_cpu is not None)
    for impl in ("xla", "xla_per_group"):
        assert max_pool_function(impl) is not max_pool_masked
    with pytest.raises(ValueError, match="conv_impl"):
        max_pool_function("fft")


def test_conv_function_picks_the_implementation():
    assert conv_function("xla", 64) is jax.lax.conv_general_dilated
    assert conv_function("im2col", 64) is conv_im2col
    # a dot with a few output columns is slow: such convs keep XLA's path
    assert conv_function("im2col", IM2COL_MIN_FEATURES - 1) is jax.lax.conv_general_dilated
    expected = conv_im2col if jax.default_backend() == "cpu" else jax.lax.conv_general_dilated
    assert conv_function("auto", 64) is expected
    assert conv_function("xla_per_group", 64) is not jax.lax.conv_general_dilated  # the per-group wrapper
    with pytest.raises(ValueError, match="conv_impl"):
        conv_function("fft", 64)


@pytest.mark.parametrize("fast_impl,deconv_impl", [("im2col", "subpixel"), ("im2col", "resize_conv"),
                                                   ("onednn", "subpixel"), ("onednn", "resize_conv")])
def test_generator_and_discriminator_conv_impls_share_parameters_and_outputs(fast_impl, deconv_impl):
    """Widths at the im2col threshold, so both paths run inside the networks; 'onednn'
    (tests/test_onednn.py) runs every conv in oneDNN."""
    if fast_impl == "onednn" and (jax.default_backend() != "cpu" or not onednn.is_available()):
        pytest.skip("oneDNN runs on a CPU backend, with the onednn-cpu-gomp wheel")
    rng = np.random.default_rng(2)
    images = jnp.asarray(rng.uniform(-120, 130, (2, 16, 16, 3)), jnp.float32)
    age_group = jnp.asarray([0, 4])
    nets = {impl: (Generator(base_features=16, num_res_blocks=1, deconv_impl=deconv_impl, conv_impl=impl),
                   Discriminator(base_features=16, out_features=16, conv_impl=impl)) for impl in ("xla", fast_impl)}
    # Compiled, and shapes only for the fast impl's init: run op by op, init alone took
    # most of this test's time.
    g_vars = jax.jit(functools.partial(nets["xla"][0].init, train=True))(jax.random.key(0), images, age_group)
    d_vars = jax.jit(functools.partial(nets["xla"][1].init, train=True))(jax.random.key(1), images / 128, age_group)
    for net, variables in zip(nets[fast_impl], (g_vars, d_vars)):
        inputs = images if net is nets[fast_impl][0] else images / 128
        shapes = jax.eval_shape(functools.partial(net.init, train=True), jax.random.key(0), inputs, age_group)
        assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(jnp.shape, variables)

    def g_loss(impl, params):
        out = nets[impl][0].apply(dict(g_vars, params=params), images, age_group, train=True,
                                  mutable=["batch_stats"])[0]
        return jnp.sum(nets[impl][1].apply(d_vars, out, age_group, train=True, mutable=["batch_stats"])[0] ** 2), out

    loss_and_grad = jax.jit(jax.value_and_grad(g_loss, argnums=1, has_aux=True), static_argnums=0)
    (loss_xla, out_xla), grads_xla = loss_and_grad("xla", g_vars["params"])
    (loss_new, out_new), grads_new = loss_and_grad(fast_impl, g_vars["params"])
    assert _relative_error(out_new, out_xla) < 1e-5
    assert _relative_error(loss_new, loss_xla) < 1e-5
    # One scale for all leaves: the conv biases before a BN get gradients that are zero up to
    # round-off, so a per-leaf relative error would compare noise with noise.
    flat = lambda tree: jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])  # noqa: E731
    assert _relative_error(flat(grads_new), flat(grads_xla)) < 1e-4


def test_config_conv_impl_reaches_the_networks_and_is_validated():
    from ipcgan_jax import configlib, gan
    from tests.helpers import config_file

    config = config_file("g75_conv5")
    assert config.conv_impl == "onednn"  # the paper's sizes: oneDNN on a CPU
    demo = config_file("demo")
    assert demo.conv_impl == "onednn" and config_file("g75_conv5", "quick").conv_impl == "xla"
    # The demo's trunk trains with the grouped convs one group at a time, its age head and
    # evaluator with oneDNN's convs.
    for task, impl in (("alexnet_identity", "xla_per_group"), ("age_classifier", "onednn"),
                       ("age_evaluator", "onednn")):
        assert gan.conv_impl(demo.pretrain[task]) == impl
        if task != "age_evaluator":
            assert gan.build_alexnet(demo.pretrain[task]).conv_impl == impl
        demo.pretrain[task].conv_impl = "fft"
        with pytest.raises(configlib.ConfigError, match="conv_impl"):
            configlib.validate_config(demo)
        demo.pretrain[task].conv_impl = impl
    assert gan.conv_impl(config_file("age_evaluator")) == "xla"  # full size: a GPU's cuDNN
    config.conv_impl = "im2col"
    assert gan.build_generator(config).conv_impl == gan.build_discriminator(config).conv_impl == "im2col"
    config.conv_impl = "fft"
    with pytest.raises(configlib.ConfigError, match="conv_impl"):
        configlib.validate_config(config)
    del config["conv_impl"]  # a config recorded before the option: XLA's conv
    assert gan.build_generator(config).conv_impl == "xla"


def test_run_recorded_before_conv_impl_resumes_only_under_xla(tmp_path):
    """Such runs ran XLA's conv: resuming them under im2col would leave their trajectory."""
    from tests.helpers import assert_resumes_only_at_default, tiny_gan_config

    config = tiny_gan_config()
    config.conv_impl = "xla"
    assert_resumes_only_at_default(config, str(tmp_path / "run"), "conv_impl", "auto")


def test_run_recorded_before_the_evaluator_conv_impl_resumes_only_under_xla(tmp_path):
    """The evaluator ran XLA's conv before it had the option, standalone and inside a GAN
    config's pretrain group."""
    from tests.helpers import assert_resumes_only_at_default, config_file

    evaluator = config_file("age_evaluator", "quick")
    assert evaluator.conv_impl == "xla"
    assert_resumes_only_at_default(evaluator, str(tmp_path / "evaluator"), "conv_impl", "onednn")
    gan_config = config_file("g75_conv5", "quick")  # trains its frozen networks first
    assert gan_config.pretrain.age_evaluator.conv_impl == "xla"
    assert_resumes_only_at_default(gan_config, str(tmp_path / "gan"), "pretrain.age_evaluator.conv_impl", "onednn")


def test_auto_conv_impl_uses_im2col_for_training_and_xla_for_inference():
    """im2col gains in the backward pass; a CPU 'auto' generator in test mode keeps XLA's conv."""
    images, age_group = jnp.zeros((1, 16, 16, 3)), jnp.zeros((1,), jnp.int32)

    def program(conv_impl, train):  # the program's text names every primitive, nested ones too
        generator = Generator(base_features=16, num_res_blocks=1, conv_impl=conv_impl)
        variables = jax.eval_shape(functools.partial(generator.init, train=True), jax.random.key(0), images,
                                   age_group)  # shapes are all the program needs
        return str(jax.make_jaxpr(lambda v: generator.apply(v, images, age_group, train=train,
                                                             mutable=["batch_stats"]))(variables))

    assert program("auto", False) == program("xla", False)
    if jax.default_backend() == "cpu":
        assert program("auto", True) == program("im2col", True)
        assert (program("im2col", True).count("conv_general_dilated")
                < program("xla", True).count("conv_general_dilated"))


@pytest.mark.parametrize("name", ["conv_im2col", "conv_onednn"])
def test_conv_replacements_refuse_other_layouts_and_dilation_by_name(name):
    conv = {"conv_im2col": conv_im2col, "conv_onednn": onednn.conv_onednn}[name]
    x, kernel = jnp.zeros((1, 6, 6, 3)), jnp.zeros((3, 3, 3, 4))
    with pytest.raises(ValueError, match=f"{name} supports NHWC/HWIO/NHWC only"):
        conv(x, kernel, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
    with pytest.raises(ValueError, match=f"{name} does not support dilation"):
        conv(x, kernel, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=("NHWC", "HWIO", "NHWC"))
