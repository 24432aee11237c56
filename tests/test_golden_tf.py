"""Golden tests: the Flax networks, loaded from TF1 checkpoints of the original graph, against
an independent TensorFlow computation of that graph (tests/tf_reference.py).

The TF side uses the original variable names, so these tests also check the weight import
(`ipcgan_jax.weights.tf1.load_tf1_checkpoint`) end to end. AlexNet keeps its full conv trunk
(227x227 input) with narrower fc layers to stay fast; G and D are the faithful sizes.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tf_reference

from ipcgan_jax import losses, preprocessing
from ipcgan_jax.checkpointing import load_variables, save_variables
from ipcgan_jax.convert import main as convert_main
from ipcgan_jax.models import AlexNet, Discriminator, Generator
from ipcgan_jax.weights.templates import (age_classifier_variables_template, alexnet_variables_template,
                                          discriminator_variables_template, generator_variables_template)
from ipcgan_jax.weights.tf1 import load_tf1_checkpoint

SMALL_ALEXNET = AlexNet(fc_features=128, bottleneck_features=32, num_identities=40, age_fc_features=128)
ALEXNET_OUTPUTS = ("conv1", "conv2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7",
                   "identity_logits", "age_logits")


def assert_close(actual, expected, what: str, rtol: float = 1e-5) -> None:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    error = float(np.max(np.abs(actual - expected))) / scale
    assert error <= rtol, f"{what}: max |diff| / max |ref| = {error:.3g} > {rtol}"


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    return tf_reference.compute_golden(str(tmp_path_factory.mktemp("tf1_golden")),
                                       alexnet_fc=128, alexnet_bottleneck=32, num_identities=40)


@pytest.fixture(scope="module")
def gan_variables(golden):
    variables, report = load_tf1_checkpoint(golden["acgan"], expect={
        "generator": generator_variables_template(), "discriminator": discriminator_variables_template()})
    return variables, report


@pytest.fixture(scope="module")
def alexnet_variables(golden):
    variables, _ = load_tf1_checkpoint(golden["alexnet"], expect={
        "alexnet": alexnet_variables_template(SMALL_ALEXNET),
        "age_classifier": age_classifier_variables_template(SMALL_ALEXNET)})
    return {"params": {**variables["alexnet"]["params"], **variables["age_classifier"]["params"]}}


@pytest.fixture(scope="module")
def jax_forward(golden, gan_variables, alexnet_variables):
    """The JAX pipeline on the same inputs, docs/faithfulness.md §7 / §8."""
    variables = gan_variables[0]
    inputs = golden["inputs"]
    age_group = jnp.asarray(inputs["age_group"])
    false_group = jnp.asarray(inputs["false_group"])
    source_128 = preprocessing.pixels_to_generator_input(jnp.asarray(inputs["source_pixels"]), 128)
    source_227 = preprocessing.pixels_to_alexnet_input(jnp.asarray(inputs["source_pixels"]))
    real = preprocessing.pixels_to_discriminator_input(jnp.asarray(inputs["real_pixels"]), 128)
    generator, discriminator = Generator(), Discriminator()
    g_train, g_stats = generator.apply(variables["generator"], source_128, age_group, train=True,
                                       mutable=["batch_stats"])
    g_test = generator.apply(variables["generator"], source_128, age_group, train=False)
    d = lambda images, groups: discriminator.apply(  # noqa: E731
        variables["discriminator"], images, groups, train=True, mutable=["batch_stats"])[0]
    g_alexnet_input = preprocessing.generator_output_to_alexnet_input(g_train)
    alexnet = lambda images: SMALL_ALEXNET.apply(alexnet_variables, images, outputs=ALEXNET_OUTPUTS)  # noqa: E731
    return dict(source_128=source_128, source_227=source_227, real=real, g_train=g_train,
                g_stats=g_stats["batch_stats"], g_test=g_test, d1=d(real, age_group),
                d2=d(real, false_group), d3=d(g_train, age_group), g_alexnet_input=g_alexnet_input,
                alexnet_source=alexnet(source_227), alexnet_generated=alexnet(g_alexnet_input))


@pytest.mark.parametrize("tensor", ["source_128", "source_227", "real"])
def test_input_scalings_match_tf(golden, jax_forward, tensor):
    assert_close(jax_forward[tensor], golden[tensor], tensor)


@pytest.mark.parametrize("mode", ["g_train", "g_test"])
def test_generator_matches_tf(golden, jax_forward, mode):
    assert_close(jax_forward[mode], golden[mode], mode)


def test_generator_test_mode_uses_moving_statistics(golden):
    # guards the test-mode check itself: moving stats must differ from this batch's stats
    assert np.max(np.abs(golden["g_test"] - golden["g_train"])) > 1e-2


def test_generator_statistics_update_matches_tf(golden, jax_forward):
    updated, _ = load_tf1_checkpoint(golden["acgan_updated"],
                                     expect={"generator": generator_variables_template()})
    expected = updated["generator"]["batch_stats"]
    flat_expected = jax.tree_util.tree_leaves_with_path(expected)
    flat_actual = dict(jax.tree_util.tree_leaves_with_path(jax_forward["g_stats"]))
    assert len(flat_expected) == len(flat_actual) == 17 * 5  # 5 outer + 12 residual BNs
    for path, value in flat_expected:
        assert_close(flat_actual[path], value, jax.tree_util.keystr(path))


@pytest.mark.parametrize("scores", ["d1", "d2", "d3"])
def test_discriminator_matches_tf(golden, jax_forward, scores):
    assert_close(jax_forward[scores], golden[scores], scores)


@pytest.mark.parametrize("layer", ALEXNET_OUTPUTS)
def test_alexnet_activations_match_tf(golden, jax_forward, layer):
    assert_close(jax_forward["alexnet_source"][layer], golden["alexnet_source"][layer], layer)


def test_generator_to_alexnet_resize_matches_tf(golden, jax_forward):
    assert_close(jax_forward["g_alexnet_input"], golden["g_alexnet_input"], "G -> AlexNet input")
    assert_close(jax_forward["alexnet_generated"]["conv5"], golden["alexnet_generated"]["conv5"],
                 "conv5 of G's output")


def test_losses_match_tf(golden, jax_forward):
    f = jax_forward
    jax_losses = {
        "d_loss": tf_reference.W_GAN * losses.discriminator_loss(
            d_real_true=f["d1"], d_real_false=f["d2"], d_fake=f["d3"]),
        "adv_loss": tf_reference.W_GAN * losses.generator_adversarial_loss(d_fake=f["d3"]),
        "fea_loss": tf_reference.W_FEA * losses.identity_feature_loss(
            generated_features=f["alexnet_generated"]["conv5"],
            source_features=f["alexnet_source"]["conv5"]),
        "age_loss": tf_reference.W_AGE * losses.age_classification_loss(
            logits=f["alexnet_generated"]["age_logits"], age_group=jnp.asarray(golden["inputs"]["age_group"])),
    }
    for name, value in jax_losses.items():
        assert golden[name] > 0, name
        assert_close(value, golden[name], name)


def test_bookkeeping_variables_ignored_and_counted(golden, gan_variables):
    _, report = gan_variables
    assert sorted(report.ignored) == golden["bookkeeping_names"]
    assert report.num_ignored == len(golden["bookkeeping_names"]) == 35
    assert report.loaded == golden["num_gan_variables"] - 35 == 206
    assert report.skipped == () and report.steady_state_batch_norms == ()


def test_unrequested_network_is_skipped_not_unexpected(golden):
    variables, report = load_tf1_checkpoint(golden["acgan"],
                                            expect={"generator": generator_variables_template()})
    assert set(variables) == {"generator"}
    assert len(report.skipped) == 22  # D: 5 convs x 2 + 3 BNs x 4
    assert all(name.startswith("discriminator/") for name in report.skipped)


def test_age_head_with_and_without_alexnet_prefix(golden, alexnet_variables):
    template = age_classifier_variables_template(SMALL_ALEXNET)
    unprefixed, _ = load_tf1_checkpoint(golden["age_classifier"], expect={"age_classifier": template})
    prefixed = alexnet_variables["params"]
    for layer in ("age_fc6", "age_fc7", "age_fc8"):
        for leaf in ("kernel", "bias"):
            np.testing.assert_array_equal(unprefixed["age_classifier"]["params"][layer][leaf],
                                          prefixed[layer][leaf])


def test_import_round_trip_through_exported_format(gan_variables, tmp_path):
    variables = gan_variables[0]["generator"]
    metadata = {"network": "generator", "source": "test"}
    save_variables(str(tmp_path / "generator"), variables, metadata)
    restored, restored_metadata = load_variables(str(tmp_path / "generator"))
    assert restored_metadata == metadata
    expected = jax.tree_util.tree_leaves_with_path(variables)
    actual = dict(jax.tree_util.tree_leaves_with_path(restored))
    assert len(actual) == len(expected)
    for path, value in expected:
        np.testing.assert_array_equal(actual[path], value, err_msg=jax.tree_util.keystr(path))


def test_convert_cli_writes_generator_and_discriminator(golden, gan_variables, tmp_path):
    out = tmp_path / "converted"
    assert convert_main(["--acgan", golden["acgan"], "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["discriminator", "generator"]
    restored, metadata = load_variables(str(out / "discriminator"))
    assert metadata["network"] == "discriminator" and metadata["ignored_bookkeeping"] == 35
    np.testing.assert_array_equal(restored["params"]["dis_4"]["kernel"],
                                  gan_variables[0]["discriminator"]["params"]["dis_4"]["kernel"])
    # a second run must not overwrite what is there
    assert convert_main(["--acgan", golden["acgan"], "--out", str(out)]) == 2
    assert sorted(os.listdir(out)) == ["discriminator", "generator"]


def test_discriminator_variant_matches_tf(tmp_path):
    variant = Discriminator(out_features=1, bn_epsilon=1e-5)
    reference = tf_reference.compute_discriminator_variant(str(tmp_path))
    variables, _ = load_tf1_checkpoint(reference["checkpoint"], expect={
        "discriminator": discriminator_variables_template(variant)})
    scores, _ = variant.apply(variables["discriminator"], jnp.asarray(reference["images"]),
                              jnp.asarray(reference["age_group"]), train=True, mutable=["batch_stats"])
    assert scores.shape == (2, 16, 16, 1)
    assert_close(scores, reference["scores"], "D variant")
