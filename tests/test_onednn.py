"""conv_impl 'onednn' (ipcgan_jax.models.onednn): oneDNN's convolutions called from the
compiled program through XLA's FFI, against XLA's conv: the same function, values and both
gradients, to float32 round-off. (Against an independent sum over the taps, and G and D
under 'onednn': tests/test_layers_speed_equivalence.py.)"""
import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ipcgan_jax.models import AlexNet, onednn
from ipcgan_jax.models.layers import conv_function

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu" or not onednn.is_available(),
                                reason="oneDNN runs on a CPU backend, with the onednn-cpu-gomp wheel")
NHWC = ("NHWC", "HWIO", "NHWC")


def _relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-30))


def _conv(impl, stride, padding, groups):
    return lambda x, k: impl(x, k, (stride, stride), padding, dimension_numbers=NHWC, feature_group_count=groups)


# (batch, input size, in, out, kernel, stride, padding, groups): the kinds of conv the networks
# use (TF SAME with the odd pixel after, strided, AlexNet's 11x11 / 4 VALID and grouped convs).
_CASES = [(2, 9, 5, 4, 7, 1, "SAME", 1), (3, 9, 4, 6, 3, 2, "SAME", 1), (2, 6, 4, 3, 4, 1, "SAME", 1),
          (2, 8, 3, 4, 4, 2, "SAME", 1), (2, 23, 3, 8, 11, 4, "VALID", 1), (2, 7, 6, 8, 5, 1, "SAME", 2),
          (1, 5, 4, 6, 3, 1, ((1, 0), (2, 1)), 2), (2, 5, 4, 6, 2, 1, "VALID", 1), (1, 6, 6, 9, 3, 1, "SAME", 3)]


@pytest.mark.parametrize("batch,size,cin,cout,kernel_size,stride,padding,groups", _CASES)
def test_onednn_conv_equals_xla_values_and_gradients(batch, size, cin, cout, kernel_size, stride, padding, groups):
    rng = np.random.default_rng(size * 100 + kernel_size)
    x = jnp.asarray(rng.normal(size=(batch, size, size + 1, cin)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, cin // groups, cout)), jnp.float32)
    fast, plain = _conv(onednn.conv_onednn, stride, padding, groups), _conv(jax.lax.conv_general_dilated,
                                                                           stride, padding, groups)
    expected = plain(x, kernel)
    actual = jax.jit(fast)(x, kernel)
    assert actual.shape == expected.shape
    assert _relative_error(actual, expected) < 1e-6
    cotangent = jnp.asarray(rng.normal(size=expected.shape), jnp.float32)
    loss = lambda f: lambda x, k: jnp.sum(f(x, k) * cotangent)  # noqa: E731
    grads_expected = jax.grad(loss(plain), argnums=(0, 1))(x, kernel)
    grads_actual = jax.jit(jax.grad(loss(fast), argnums=(0, 1)))(x, kernel)
    for name, a, e in zip(("input", "kernel"), grads_actual, grads_expected):
        assert _relative_error(a, e) < 1e-5, name


def test_onednn_conv_is_deterministic():
    """Same inputs, same bits, run after run (a resumed run continues the exact trajectory)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(4, 16, 16, 32)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 32, 32)), jnp.float32)
    loss = jax.jit(jax.value_and_grad(lambda x, k: jnp.sum(jnp.sin(_conv(onednn.conv_onednn, 1, "SAME", 1)(x, k))),
                                      argnums=(0, 1)))
    first, second = loss(x, kernel), loss(x, kernel)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_onednn_conv_under_vmap_and_on_sharded_batches():
    """The photo tool maps G over faces; data parallelism shards the batch over devices."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(8, 6, 6, 4)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 4, 5)), jnp.float32)
    conv = _conv(onednn.conv_onednn, 1, "SAME", 1)
    expected = _conv(jax.lax.conv_general_dilated, 1, "SAME", 1)(x, kernel)
    mapped = jax.vmap(lambda face: conv(face[None], kernel)[0])(x)
    assert _relative_error(mapped, expected) < 1e-6
    devices = jax.devices()[:2]
    if len(devices) == 2:
        from ipcgan_jax import parallel
        mesh = parallel.make_mesh(devices)
        sharded = jax.device_put(x, parallel.batch_sharded(mesh))
        actual = jax.jit(conv)(sharded, jax.device_put(kernel, parallel.replicated(mesh)))
        assert _relative_error(actual, expected) < 1e-6


def test_onednn_conv_rejects_what_it_does_not_implement_and_keeps_other_dtypes_on_xla():
    x, kernel = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2))
    with pytest.raises(ValueError, match="NHWC"):
        onednn.conv_onednn(x, kernel, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
    with pytest.raises(ValueError, match="dilation"):
        onednn.conv_onednn(x, kernel, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=NHWC)
    with pytest.raises(ValueError, match="channels"):
        onednn.conv_onednn(x, jnp.ones((3, 3, 3, 2)), (1, 1), "SAME", dimension_numbers=NHWC)
    bf16 = lambda f: _conv(f, 1, "SAME", 1)(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16))  # noqa: E731
    program = str(jax.make_jaxpr(lambda: bf16(onednn.conv_onednn))())
    assert "conv_general_dilated" in program and "ffi_call" not in program


def test_missing_library_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv(onednn.LIBRARY_ENV, str(tmp_path / "libdnnl.so.3"))
    assert not onednn.is_available()
    with pytest.raises(RuntimeError, match="onednn-cpu-gomp"):
        onednn._Runtime()


def test_conv_function_onednn_and_alexnet_share_parameters_and_outputs():
    """AlexNet under 'onednn' against XLA's conv: every conv, not only the grouped ones, runs
    in oneDNN. (G and D: tests/test_layers_speed_equivalence.py, with the other conv_impls.)"""
    assert conv_function("onednn", 64) is onednn.conv_onednn
    rng = np.random.default_rng(2)
    alex_images = jnp.asarray(rng.uniform(-120, 130, (2, 67, 67, 3)), jnp.float32)
    widths = dict(conv_features=(8, 8, 8, 8, 8), fc_features=16, bottleneck_features=8, age_fc_features=16,
                  num_identities=20)
    plain, fast = AlexNet(**widths, conv_impl="xla"), AlexNet(**widths, conv_impl="onednn")
    params = plain.init(jax.random.key(0), alex_images)["params"]
    expected = plain.apply({"params": params}, alex_images, outputs=("conv5", "age_logits"))
    actual = fast.apply({"params": params}, alex_images, outputs=("conv5", "age_logits"))
    for name in expected:
        assert _relative_error(actual[name], expected[name]) < 1e-5, name
    program = str(jax.make_jaxpr(lambda p: fast.apply({"params": p}, alex_images, outputs=("conv5",)))(params))
    assert "conv_general_dilated" not in program and program.count("ffi_call") == 5


def test_age_evaluator_under_onednn_trains_like_under_xla():
    """The evaluator task builds its network with the config's conv_impl; under 'onednn' its
    logits and every gradient equal XLA's conv's up to float rounding."""
    from ipcgan_jax import age_evaluator
    from ipcgan_jax.classifiers import tasks
    from tests.helpers import config_file

    config = config_file("age_evaluator", "demo")
    config.model.evaluator.update(stage_features=(8, 16), image_size=32)
    assert config.conv_impl == "onednn"
    plain, fast = (age_evaluator.build_age_evaluator(config.model.evaluator, conv_impl=impl)
                   for impl in ("xla", "onednn"))
    rng = np.random.default_rng(4)
    images = jnp.asarray(rng.uniform(-1, 1, (4, 32, 32, 3)), jnp.float32)
    variables = jax.jit(functools.partial(plain.init, train=False))(jax.random.key(0), images)

    def loss(module, params):
        logits, _ = module.apply(dict(variables, params=params), images, train=True, mutable=["batch_stats"])
        return jnp.sum(logits * jnp.arange(logits.shape[-1])), logits

    results = {}
    for name, module in (("xla", plain), ("onednn", fast)):
        results[name] = jax.jit(jax.value_and_grad(functools.partial(loss, module), has_aux=True))(
            variables["params"])
    (_, logits_xla), grads_xla = results["xla"]
    (_, logits_new), grads_new = results["onednn"]
    assert _relative_error(logits_new, logits_xla) < 1e-5
    flat = lambda tree: jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])  # noqa: E731
    assert _relative_error(flat(grads_new), flat(grads_xla)) < 1e-4
    program = str(jax.make_jaxpr(lambda p: fast.apply(dict(variables, params=p), images))(variables["params"]))
    assert "conv_general_dilated" not in program and "ffi_call" in program
    # ... and the task builds what the config names
    task = tasks.evaluator_task(config, types.SimpleNamespace(age_group=np.arange(20) % 5, name="faces"))
    task_program = str(jax.make_jaxpr(lambda v: task.apply(v, None, images * 127.5, None))(variables))
    assert "conv_general_dilated" not in task_program and "ffi_call" in task_program


def test_conv_function_without_the_library_runs_im2col_and_says_so(monkeypatch, tmp_path, caplog):
    from ipcgan_jax.models import layers
    monkeypatch.setenv(onednn.LIBRARY_ENV, str(tmp_path / "libdnnl.so.3"))
    layers._warn_onednn_missing.cache_clear()
    with caplog.at_level("WARNING"):
        assert conv_function("onednn", 64) is conv_function("auto", 64)
    assert "onednn-cpu-gomp" in caplog.text and "im2col" in caplog.text
    layers._warn_onednn_missing.cache_clear()
