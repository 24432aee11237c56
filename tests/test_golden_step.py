"""Golden training step: one compiled faithful step (`gan.make_train_step`) against an
independent TensorFlow computation of the original's step (tests/tf_reference.py:
`tf.gradients` and TF's own Adam kernel, `ResourceApplyAdam`), from the same weights,
BN statistics and inputs.

The networks are narrowed (configs/g75_conv5.py with the sizes of tests/helpers.py's
tiny config) so that the step stays cheap; everything else is the faithful config: loss
weights, feature layer, TF1 Adam, one target group per batch. What is compared: the
weighted losses; the gradients of D (D step) and G (G step against the updated D); the
parameters, Adam moments and BN moving statistics after the step. The TF side takes the
loss weights and Adam settings from docs/faithfulness.md §7 and §9, not from the config,
so a changed default turns this red; the faithful values themselves are pinned in tests/test_configs.py.

Also TF1 Adam itself (`optimizers.tf1_adam`) against ResourceApplyAdam over several steps
and gradients of every magnitude, where epsilon's placement shows.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
import tf_reference

from ipcgan_jax import gan, optimizers, parallel
from ipcgan_jax.weights.templates import (age_classifier_variables_template, alexnet_variables_template,
                                          discriminator_variables_template, generator_variables_template)
from ipcgan_jax.weights.tf1 import load_tf1_checkpoint
from tests.helpers import tiny_gan_config

# Layers whose conv bias feeds a BatchNorm: the BN subtracts the batch mean, so their
# exact gradient is 0 and both sides compute float32 round-off; Adam turns that noise
# into a move of up to lr of either sign. They are bounded, not compared.
BIASES_BEFORE_BATCHNORM = {"conv1", "conv2", "conv3", "deconv1", "deconv2", "dis_1", "dis_2", "dis_3"}
# Gradient entries below this fraction of their layer's largest are not compared
# elementwise after the Adam step (their sign is within float32 noise).
GRADIENT_FLOOR = 1e-3


def flat(tree) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(path): np.asarray(leaf, np.float64)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def is_zero_gradient(path: str) -> bool:
    parts = [p.strip("[]'") for p in path.split("][")]
    return parts[-1] == "bias" and parts[-2] in BIASES_BEFORE_BATCHNORM


def max_relative_error(actual, expected) -> float:
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    return float(np.max(np.abs(np.asarray(actual, np.float64) - expected))) / scale


@pytest.fixture(scope="module")
def config():
    return tiny_gan_config()


@pytest.fixture(scope="module")
def reference(config, tmp_path_factory):
    m, a = config.model, config.model.alexnet
    return tf_reference.compute_golden_step(
        str(tmp_path_factory.mktemp("tf_step")), batch=config.batch_size, image_size=config.data.image_size,
        alexnet_size=config.data.alexnet_size, g_base=m.generator.base_features,
        g_res_blocks=m.generator.num_res_blocks, d_base=m.discriminator.base_features,
        d_out_features=m.discriminator.out_features, alexnet_conv=tuple(a.conv_features),
        alexnet_fc=a.fc_features, alexnet_bottleneck=a.bottleneck_features,
        num_identities=a.num_identities, alexnet_age_fc=a.age_fc_features)


@pytest.fixture(scope="module")
def templates(config):
    size, alexnet = config.data.image_size, gan.build_alexnet(config)
    return {"generator": generator_variables_template(gan.build_generator(config), size),
            "discriminator": discriminator_variables_template(gan.build_discriminator(config), size),
            "alexnet": alexnet_variables_template(alexnet, config.data.alexnet_size),
            "age_classifier": age_classifier_variables_template(alexnet, config.data.alexnet_size)}


def read_gan(prefix: str, templates) -> dict:
    """A TF1 checkpoint of G and D as Flax variables, through the weight import."""
    variables, _ = load_tf1_checkpoint(prefix, expect={k: templates[k] for k in ("generator", "discriminator")})
    return variables


@pytest.fixture(scope="module")
def step(config, reference, templates):
    """The compiled step from the reference's initial weights: (before, after, metrics)."""
    initial = read_gan(reference["initial"], templates)
    alexnet, _ = load_tf1_checkpoint(reference["alexnet"], expect={
        k: templates[k] for k in ("alexnet", "age_classifier")})
    frozen = {**alexnet["alexnet"]["params"], **alexnet["age_classifier"]["params"]}
    g, d = initial["generator"], initial["discriminator"]
    optimizer = gan.build_optimizer(config)  # a fresh optimizer state, as at a run's first step
    state = gan.GanState(step=jnp.zeros((), jnp.int32), g_params=g["params"], g_batch_stats=g["batch_stats"],
                         d_params=d["params"], d_batch_stats=d["batch_stats"],
                         g_opt_state=optimizer.init(g["params"]), d_opt_state=optimizer.init(d["params"]))
    # compiled as the trainer compiles it (ipcgan_jax/train.py), here on one device
    mesh = parallel.make_mesh(jax.devices()[:1])
    replicated = parallel.replicated(mesh)
    step_fn = jax.jit(gan.make_train_step(config), donate_argnums=(0,),
                      in_shardings=(replicated, parallel.batch_sharded(mesh), replicated),
                      out_shardings=(replicated, replicated))
    after, metrics = step_fn(parallel.replicate(state, mesh), parallel.shard_batch(reference["batch"], mesh),
                             parallel.replicate(frozen, mesh))
    return state, parallel.to_host(after), {k: float(v) for k, v in metrics.items()}


@pytest.mark.parametrize("jax_metric, tf_loss", [
    ("d_loss_weighted", "d_loss"), ("g_adversarial_loss_weighted", "adv_loss"),
    ("g_feature_loss_weighted", "fea_loss"), ("g_age_loss_weighted", "age_loss"),
    ("g_loss_weighted", "g_loss")])
def test_step_losses_match_tf(step, reference, jax_metric, tf_loss):
    expected = float(reference["losses"][tf_loss])
    assert expected > 0
    assert step[2][jax_metric] == pytest.approx(expected, rel=2e-5), jax_metric


@pytest.mark.parametrize("network, view", [("discriminator", "d_grad"), ("generator", "g_grad")])
def test_step_gradients_match_tf(step, reference, templates, network, view):
    """The gradients, read back from Adam's first moment: from zero, m = (1 - b1) * g exactly."""
    expected = flat(read_gan(reference[view], templates)[network]["params"])
    opt_state = getattr(step[1], f"{network[0]}_opt_state")
    actual = {k: v / (1.0 - tf_reference.ADAM_B1) for k, v in flat(opt_state.mu).items()}
    assert sorted(actual) == sorted(expected)
    scale = max(np.max(np.abs(g)) for g in expected.values())
    compared = 0
    for path, g in expected.items():
        if is_zero_gradient(path):  # round-off on both sides
            assert max(np.max(np.abs(g)), np.max(np.abs(actual[path]))) < 2e-5 * scale, path
            continue
        assert np.max(np.abs(g)) > 1e-4 * scale, f"{path}: a gradient this small would compare nothing"
        assert max_relative_error(actual[path], g) < 5e-5, path
        compared += 1
    assert compared >= len(expected) // 2


@pytest.mark.parametrize("network", ["discriminator", "generator"])
def test_step_parameters_and_adam_moments_match_tf(step, reference, templates, network):
    before = flat(getattr(step[0], f"{network[0]}_params"))
    actual = flat(getattr(step[1], f"{network[0]}_params"))
    expected = flat(read_gan(reference["after"], templates)[network]["params"])
    gradients = flat(read_gan(reference[f"{network[0]}_grad"], templates)[network]["params"])
    lr = tf_reference.ADAM_LR
    moved = compared = 0
    for path, p in expected.items():
        g = np.abs(gradients[path])
        above_noise = g > GRADIENT_FLOOR * g.max()
        if is_zero_gradient(path):
            above_noise[:] = False
        # where the gradient's sign is float32 noise, Adam still moves by at most lr
        assert np.all(np.abs(actual[path] - before[path])[~above_noise] <= lr * (1 + 1e-3)), path
        np.testing.assert_allclose(actual[path][above_noise], p[above_noise], rtol=5e-7, atol=5e-5 * lr,
                                   err_msg=path)
        moved += int(np.sum(np.abs(p - before[path])[above_noise] > 0.5 * lr))
        compared += int(above_noise.sum())
    assert compared > 0.8 * sum(v.size for v in expected.values()), "most entries must be compared"
    assert moved > 0.9 * compared, "the step barely moved the parameters: the comparison would be vacuous"
    # the second moments (Adam's v), where they are above round-off
    actual_nu = flat(getattr(step[1], f"{network[0]}_opt_state").nu)
    expected_nu = flat(read_gan(reference["adam_v"], templates)[network]["params"])
    for path, v in expected_nu.items():
        if not is_zero_gradient(path):
            assert max_relative_error(actual_nu[path], v) < 1e-4, path


@pytest.mark.parametrize("network", ["discriminator", "generator"])
def test_step_moving_statistics_match_tf(step, reference, templates, network):
    """G's statistics update in both halves of the step, D's in its three D-step passes."""
    expected = flat(read_gan(reference["after"], templates)[network]["batch_stats"])
    actual = flat(getattr(step[1], f"{network[0]}_batch_stats"))
    before = flat(getattr(step[0], f"{network[0]}_batch_stats"))
    assert sorted(actual) == sorted(expected)
    for path, value in expected.items():
        if path.endswith("['num_updates']"):
            # the two warm-up rounds updated G and D1's statistics, then the step: G twice, D three times
            np.testing.assert_array_equal(value, 4.0 if network == "generator" else 5.0, err_msg=path)
        assert max_relative_error(actual[path], value) < 1e-5, path
        assert np.max(np.abs(value - before[path])) > 0, f"{path} did not change"


def test_step_counters(step):
    _, after, _ = step
    assert int(after.step) == 1
    assert int(after.g_opt_state.count) == int(after.d_opt_state.count) == 1


# ----------------------------------------------------------------------------- TF1 Adam
def test_tf1_adam_matches_tf_adam_kernel():
    """Five steps of optimizers.tf1_adam against ResourceApplyAdam, with gradients from
    1e-9 to 1e1: TF1 adds epsilon to sqrt(v) before the bias correction, which shows
    for gradients near epsilon (optax's placement is checked to differ there)."""
    lr, b1, b2, eps = (tf_reference.ADAM_LR, tf_reference.ADAM_B1, tf_reference.ADAM_B2,
                       tf_reference.ADAM_EPS)
    rng = np.random.default_rng(0)
    magnitudes = np.logspace(-9, 1, 41)
    gradients = [(rng.choice([-1.0, 1.0], magnitudes.size) * magnitudes
                  * rng.uniform(0.3, 3.0, magnitudes.size)).astype(np.float32) for _ in range(5)]
    params = rng.normal(0.0, 0.1, magnitudes.size).astype(np.float32)

    expected = []
    graph = tf.Graph()
    with graph.as_default():
        var = tf.compat.v1.get_variable("w", initializer=params)
        slots = tf_reference.adam_slots([var])
        grad = tf.compat.v1.placeholder(tf.float32, params.shape)
        steps = [tf_reference.apply_adam([var], [grad], slots, step=t) for t in range(1, 6)]
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for op, g in zip(steps, gradients):
                session.run(op, {grad: g})
                expected.append(session.run(var))

    def run(optimizer):
        p, state, out = jnp.asarray(params), optimizer.init(jnp.asarray(params)), []
        update = jax.jit(optimizer.update)
        for g in gradients:
            updates, state = update(jnp.asarray(g), state)
            p = p + updates
            out.append(np.asarray(p))
        return out

    for t, (actual, want) in enumerate(zip(run(optimizers.make_optimizer(lr, b1, b2, eps, "tf1")), expected)):
        np.testing.assert_allclose(actual, want, rtol=0, atol=2e-7 * np.abs(want).max(), err_msg=f"step {t + 1}")
    # the comparison is sensitive to where epsilon goes: optax's placement differs here
    optax_placement = run(optimizers.make_optimizer(lr, b1, b2, eps, "optax"))
    assert np.max(np.abs(optax_placement[0] - expected[0])) > 50 * 2e-7 * np.abs(expected[0]).max()
