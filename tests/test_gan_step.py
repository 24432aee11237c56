"""The compiled two-player step: compiled once, data-parallel equivalent, learns."""
import jax
import numpy as np
import pytest

from ipcgan_jax import gan, parallel
from tests.helpers import random_alexnet_params, random_batch, tiny_gan_config


def _run(config, devices, num_steps, frozen_host):
    mesh = parallel.make_mesh(devices)
    replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    step_fn = jax.jit(gan.make_train_step(config), donate_argnums=(0,),
                      in_shardings=(replicated, sharded, replicated), out_shardings=(replicated, replicated))
    state = jax.jit(lambda r: gan.init_state(config, r), out_shardings=replicated)(jax.random.key(0))
    frozen = parallel.replicate(frozen_host, mesh)
    history = []
    for i in range(num_steps):
        state, metrics = step_fn(state, parallel.shard_batch(random_batch(config, i, target=i % 5, false=(i + 2) % 5), mesh), frozen)
        history.append({k: float(v) for k, v in metrics.items()})
    return step_fn, parallel.to_host(state), history


@pytest.fixture(scope="module")
def config():
    return tiny_gan_config()


@pytest.fixture(scope="module")
def frozen(config):
    return random_alexnet_params(config)


def test_step_compiles_once_and_reports_every_term(config, frozen):
    step_fn, _, history = _run(config, jax.devices()[:1], 3, frozen)
    assert step_fn._cache_size() == 1
    for key in ("d_loss", "g_adversarial_loss", "g_feature_loss", "g_age_loss",
                "g_adversarial_loss_weighted", "g_feature_loss_weighted", "g_age_loss_weighted",
                "d_score_real_true", "d_score_fake", "d_grad_norm", "g_grad_norm"):
        assert all(np.isfinite(h[key]) for h in history), key
    h = history[0]
    assert h["g_adversarial_loss_weighted"] == pytest.approx(config.loss.gan_weight * h["g_adversarial_loss"], rel=1e-6)
    assert h["g_feature_loss_weighted"] == pytest.approx(config.loss.feature_weight * h["g_feature_loss"], rel=1e-6)
    assert h["g_loss_weighted"] == pytest.approx(
        h["g_adversarial_loss_weighted"] + h["g_feature_loss_weighted"] + h["g_age_loss_weighted"], rel=1e-5)


def _bias_before_batchnorm(path) -> bool:
    """Conv biases right before a BN: their exact gradient is 0 (the BN removes them), so
    their values are float32 round-off, on one device as on eight."""
    names = [getattr(k, "key", "") for k in path]
    return names[-1] == "bias" and names[-2] in {"conv1", "conv2", "conv3", "deconv1", "deconv2",
                                                 "dis_1", "dis_2", "dis_3"}


def test_eight_devices_match_one_device(config, frozen):
    assert len(jax.devices()) >= 8, "conftest sets 8 simulated CPU devices"
    # Some gradients are 0 or nearly 0 in exact arithmetic (conv biases before a BN,
    # weights on the constant condition maps); Adam with eps 1e-8 turns their float32
    # round-off, which depends on the reduction order, into updates of either sign up to
    # lr, on one device as on eight. With eps 0.1 such gradients move nothing while the
    # real ones still train (checked below), so what is compared is the sharded step.
    # Conv biases before a BN have an exactly-0 gradient and are only bounded.
    config = config.copy_and_resolve_references()
    config.optimizer.eps = 0.1
    config.optimizer.learning_rate = 0.01
    steps = 3
    _, one, hist_one = _run(config, jax.devices()[:1], steps, frozen)
    _, eight, hist_eight = _run(config, jax.devices()[:8], steps, frozen)
    for tree in ("g_params", "d_params", "g_batch_stats", "d_batch_stats"):
        flat_one = jax.tree_util.tree_flatten_with_path(getattr(one, tree))[0]
        flat_eight = jax.tree.leaves(getattr(eight, tree))
        for (path, a), b in zip(flat_one, flat_eight):
            where = f"{tree}{jax.tree_util.keystr(path)}"
            if tree.endswith("params") and _bias_before_batchnorm(path):
                assert np.max(np.abs(a - b)) <= 2 * steps * config.optimizer.learning_rate, where
            else:
                np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4, err_msg=where)
    initial = gan.init_state(config, jax.random.key(0))
    moved = max(float(np.max(np.abs(a - b))) for a, b in
                zip(jax.tree.leaves(initial.g_params), jax.tree.leaves(one.g_params)))
    assert moved > 1e-3, "the parameters barely moved: the comparison would be vacuous"
    assert hist_one[-1]["d_loss"] == pytest.approx(hist_eight[-1]["d_loss"], rel=1e-4)


def test_generator_statistics_update_twice_per_step(config, frozen):
    _, state, _ = _run(config, jax.devices()[:1], 2, frozen)
    assert float(state.g_batch_stats["bn1"]["num_updates"]) == 4.0
    # D's statistics update in the D step only: 3 passes per step.
    assert float(state.d_batch_stats["dis_bn0"]["num_updates"]) == 6.0


def test_one_group_per_batch_hides_the_condition_from_g_first_batchnorm():
    """Why the demo mixes target groups (README, "What the demo does"): with one group per
    batch the condition maps are constant over the batch, so the train-mode BN after G's
    first conv subtracts them wherever the 7x7 kernel does not reach the zero padding
    (what is left there comes from the border pixels shifting the batch statistics);
    with mixed groups the same faces get condition-dependent activations everywhere."""
    config = tiny_gan_config()
    generator = gan.build_generator(config)
    images = jax.random.normal(jax.random.key(0), (8, 32, 32, 3)) * 60.0
    variables = generator.init(jax.random.key(1), images[:1], np.zeros(1, np.int32), train=True)

    def first_bn_output(age_group):
        _, state = generator.apply(variables, images, np.asarray(age_group, np.int32), train=True,
                                   capture_intermediates=True, mutable=["intermediates", "batch_stats"])
        return np.asarray(state["intermediates"]["bn1"]["__call__"][0])

    interior = (slice(None), slice(3, -3), slice(3, -3))
    one_group = np.abs(first_bn_output([0] * 8) - first_bn_output([4] * 8))
    mixed = np.abs(first_bn_output([0, 1, 2, 3, 4, 0, 1, 2]) - first_bn_output([4, 3, 2, 1, 0, 4, 3, 2]))
    assert one_group[interior].mean() < 0.25 * mixed[interior].mean()
    assert one_group.max() > 3 * one_group[interior].max()  # the borders still see the condition
