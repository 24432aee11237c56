"""The compiled two-player step: compiled once, data-parallel equivalent, learns."""
import jax
import numpy as np
import pytest

from ipcgan_jax import gan, parallel
from tests.helpers import random_alexnet_params, random_batch, tiny_gan_config


def _run(config, devices, num_steps, frozen_host, states=None):
    """Trains `num_steps` on `devices`; appends the host state before the first step and
    after each step to `states`."""
    mesh = parallel.make_mesh(devices)
    replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    step_fn = jax.jit(gan.make_train_step(config), donate_argnums=(0,),
                      in_shardings=(replicated, sharded, replicated), out_shardings=(replicated, replicated))
    state = jax.jit(lambda r: gan.init_state(config, r), out_shardings=replicated)(jax.random.key(0))
    frozen = parallel.replicate(frozen_host, mesh)
    if states is not None:
        states.append(parallel.to_host(state))
    history = []
    for i in range(num_steps):
        state, metrics = step_fn(state, parallel.shard_batch(random_batch(config, i, target=i % 5, false=(i + 2) % 5), mesh), frozen)
        history.append({k: float(v) for k, v in metrics.items()})
        if states is not None:
            states.append(parallel.to_host(state))
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


def _flat(tree) -> dict:
    return {jax.tree_util.keystr(path): np.asarray(leaf, np.float64)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def test_eight_devices_match_one_device(config, frozen):
    """The faithful optimizer (TF1 Adam, eps 1e-8, lr 1e-3) on 8 devices against 1.

    Exact agreement is impossible: the two reduce in different orders, and Adam's first
    update, lr * g / (|g| + eps / sqrt(1 - b2)) = lr * g / (|g| + 3.2e-7), turns a gradient
    within float32 round-off of zero into a move of up to lr whose sign is that round-off.
    Such gradients are exactly 0 for conv biases before a BN and for the interior taps of
    weights on a batch-constant condition map (the BN removes both), and tiny for a few
    other weights; a weight of the latter kind moved differently (3e-5 in one run) changes
    the next gradients by about 1%, so the trajectories then part by O(lr) per step.
    So: after one step, every gradient and every parameter whose gradient is above
    round-off must agree to round-off, the rest move by at most lr on each side; after
    three, the losses agree closely and no parameter is further apart than Adam's steps."""
    assert len(jax.devices()) >= 8, "conftest sets 8 simulated CPU devices"
    assert (config.optimizer.eps, config.optimizer.learning_rate, config.optimizer.epsilon_placement) == (
        1e-8, 1e-3, "tf1")  # the faithful optimizer (configs/g75_conv5.py)
    lr, steps = config.optimizer.learning_rate, 3
    one_states, eight_states = [], []
    _, one, hist_one = _run(config, jax.devices()[:1], steps, frozen, one_states)
    _, eight, hist_eight = _run(config, jax.devices()[:8], steps, frozen, eight_states)
    initial = one_states[0]

    # ---- one step
    first_one, first_eight = one_states[1], eight_states[1]
    for network in ("g", "d"):
        # Adam's first moment after one step is exactly (1 - b1) * gradient
        grads_one = _flat(getattr(first_one, f"{network}_opt_state").mu)
        grads_eight = _flat(getattr(first_eight, f"{network}_opt_state").mu)
        before = _flat(getattr(initial, f"{network}_params"))
        params_one = _flat(getattr(first_one, f"{network}_params"))
        params_eight = _flat(getattr(first_eight, f"{network}_params"))
        scale = max(np.max(np.abs(g)) for g in grads_one.values())
        compared = total = 0
        for path, g in grads_one.items():
            where = f"{network}_params{path}"
            total += g.size
            if np.max(np.abs(g)) > 1e-4 * scale:  # not a gradient that is 0 in exact arithmetic
                np.testing.assert_allclose(grads_eight[path], g, rtol=0, atol=2e-5 * np.max(np.abs(g)),
                                           err_msg=where)
            above_noise = np.abs(g) > 1e-4 * scale
            np.testing.assert_allclose(params_eight[path][above_noise], params_one[path][above_noise],
                                       rtol=1e-6, atol=1e-4 * lr, err_msg=where)
            for params in (params_one, params_eight):
                assert np.all(np.abs(params[path] - before[path])[~above_noise] <= lr * (1 + 1e-3)), where
            compared += int(above_noise.sum())
        assert compared > 0.8 * total, f"{network}: only {compared} of {total} entries above round-off"
    for tree in ("g_batch_stats", "d_batch_stats"):
        stats_one, stats_eight = _flat(getattr(first_one, tree)), _flat(getattr(first_eight, tree))
        for path, value in stats_one.items():
            np.testing.assert_allclose(stats_eight[path], value, rtol=0, atol=1e-5 * max(np.max(np.abs(value)), 1e-6),
                                       err_msg=f"{tree}{path}")

    # ---- three steps
    for key in ("d_loss", "g_adversarial_loss", "g_feature_loss", "g_age_loss", "g_loss_weighted"):
        assert hist_eight[-1][key] == pytest.approx(hist_one[-1][key], rel=1e-3), key
    moved = 0.0
    for tree in ("g_params", "d_params"):
        final_one, final_eight = _flat(getattr(one, tree)), _flat(getattr(eight, tree))
        for path, value in final_one.items():
            assert np.max(np.abs(final_eight[path] - value)) <= 2 * steps * lr, f"{tree}{path}"
        moved = max(moved, max(np.max(np.abs(v - b)) for v, b in zip(
            final_one.values(), _flat(getattr(initial, tree)).values())))
    assert moved > lr, "the parameters barely moved: the comparison would be vacuous"


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


def test_pixel_term_compares_g_output_with_its_source(frozen):
    """The pixel variant (loss.pixel_weight): weighted, summed into G's loss, and measured
    in G's output range. A residual-output G starts as the identity map, so its first pixel
    loss is ~0 only if the source is brought to [-1, 1] the way G's output is."""
    config = tiny_gan_config()
    config.loss.pixel_weight = 50.0
    config.model.generator.residual_output = True
    _, _, history = _run(config, jax.devices()[:1], 2, frozen)
    first = history[0]
    assert first["g_pixel_loss"] < 2e-3  # only the atanh clip at the range's ends differs
    assert history[1]["g_pixel_loss"] > first["g_pixel_loss"]  # G moved after one update
    for h in history:
        assert h["g_pixel_loss_weighted"] == pytest.approx(50.0 * h["g_pixel_loss"], rel=1e-6)
        assert h["g_loss_weighted"] == pytest.approx(
            h["g_adversarial_loss_weighted"] + h["g_feature_loss_weighted"] + h["g_age_loss_weighted"]
            + h["g_pixel_loss_weighted"], rel=1e-5)
    faithful = _run(tiny_gan_config(), jax.devices()[:1], 1, frozen)[2][0]
    assert "g_pixel_loss" not in faithful  # the original has no pixel term


def test_run_recorded_before_the_pixel_term_resumes_only_without_it(tmp_path):
    from tests.helpers import assert_resumes_only_at_default

    assert_resumes_only_at_default(tiny_gan_config(), str(tmp_path / "run"), "loss.pixel_weight", 10.0)


def test_run_recorded_before_the_weight_average_resumes_only_without_it(tmp_path):
    from tests.helpers import assert_resumes_only_at_default

    assert_resumes_only_at_default(tiny_gan_config(), str(tmp_path / "run"), "generator_ema_decay", 0.99)
