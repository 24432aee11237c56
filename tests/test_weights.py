"""Weight import: templates, TF1 name mapping and its errors, bvlc_alexnet.npy, the CLI.

Expected names and shapes are written out here from docs/faithfulness.md §3-§6, not taken
from the code.
"""
from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tf_reference

from ipcgan_jax.convert import main as convert_main
from ipcgan_jax.models import AlexNet, Discriminator, Generator
from ipcgan_jax.weights.bvlc import load_bvlc_alexnet
from ipcgan_jax.weights.mismatch import CheckpointMismatchError
from ipcgan_jax.weights.templates import (age_classifier_variables_template, alexnet_variables_template,
                                          discriminator_variables_template, generator_variables_template)
from ipcgan_jax.weights.tf1 import STEADY_STATE_UPDATES, load_tf1_checkpoint


def count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


# ----------------------------------------------------------------------------- templates
def test_faithful_parameter_counts():
    assert count(generator_variables_template()["params"]) == 1_976_611
    assert count(discriminator_variables_template()["params"]) == 6_963_392


def test_faithful_alexnet_shapes_match_the_known_weight_files():
    params = alexnet_variables_template()["params"]
    expected = {"conv1": (11, 11, 3, 96), "conv2": (5, 5, 48, 256), "conv3": (3, 3, 256, 384),
                "conv4": (3, 3, 192, 384), "conv5": (3, 3, 192, 256), "fc6": (9216, 4096),
                "fc7": (4096, 4096), "new_1": (4096, 256), "new_2": (256, 2000)}
    assert {k: tuple(v["kernel"].shape) for k, v in params.items()} == expected
    age = age_classifier_variables_template()["params"]
    assert {k: tuple(v["kernel"].shape) for k, v in age.items()} == {
        "age_fc6": (9216, 4096), "age_fc7": (4096, 4096), "age_fc8": (4096, 5)}


def test_discriminator_variant_builds():
    variant = Discriminator(out_features=1, bn_epsilon=1e-5)
    params = discriminator_variables_template(variant)["params"]
    assert tuple(params["dis_4"]["kernel"].shape) == (4, 4, 512, 1)
    assert count(params) == 6_963_392 - 4 * 4 * 512 * 511 - 511
    variables = variant.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), jnp.array([0, 4]), train=False)
    scores = variant.apply(variables, jnp.ones((2, 32, 32, 3)), jnp.array([0, 4]), train=False)
    assert scores.shape == (2, 4, 4, 1)


# ----------------------------------------------------------------------------- TF1 mapping
TINY = Generator(base_features=2, num_res_blocks=1)
# tiny generator of docs/faithfulness.md §3 (base 2, one residual block), as the original
# names it
TINY_CONVS = {"conv1": (7, 7, 8, 2), "conv2": (3, 3, 2, 4), "conv3": (3, 3, 4, 8),
              "unit_0/sub1/conv1": (3, 3, 8, 8), "unit_0/sub2/conv2": (3, 3, 8, 8),
              "deconv1": (3, 3, 4, 8), "deconv2": (3, 3, 2, 4), "conv4": (7, 7, 2, 3)}
TINY_BNS = {"bn1": 2, "bn2": 4, "bn3": 8, "unit_0/sub1/bn1": 8, "unit_0/sub2/bn2": 8, "bn4": 4, "bn5": 2}


def tiny_generator_arrays(shadows: bool, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.RandomState(seed)
    arrays = {}
    for name, shape in TINY_CONVS.items():
        arrays[f"generator/{name}/weights"] = rng.randn(*shape).astype(np.float32)
        arrays[f"generator/{name}/biases"] = rng.randn(shape[2] if "deconv" in name else shape[3]).astype(np.float32)
    for name, channels in TINY_BNS.items():
        bn = f"generator/{name}"
        for stat in ("gamma", "beta", "moving_mean"):
            arrays[f"{bn}/{stat}"] = rng.randn(channels).astype(np.float32)
        arrays[f"{bn}/moving_variance"] = rng.uniform(0.5, 2, channels).astype(np.float32)
        if shadows:
            for stat in ("moving_mean", "moving_variance"):
                arrays[f"{bn}/{bn}/{stat}/biased"] = rng.randn(channels).astype(np.float32)
                arrays[f"{bn}/{bn}/{stat}/local_step"] = np.array(7, np.int64)
    return arrays


def load_tiny(tmp_path, arrays):
    prefix = tf_reference.write_tf1_checkpoint(str(tmp_path / "tiny.model-1"), arrays)
    return load_tf1_checkpoint(prefix, expect={"generator": generator_variables_template(TINY, 16)})


def test_tf1_names_map_onto_flax_variables(tmp_path):
    arrays = tiny_generator_arrays(shadows=True)
    variables, report = load_tiny(tmp_path, arrays)
    params, stats = variables["generator"]["params"], variables["generator"]["batch_stats"]
    np.testing.assert_array_equal(params["deconv1"]["kernel"], arrays["generator/deconv1/weights"])
    np.testing.assert_array_equal(params["unit_0"]["conv2"]["bias"], arrays["generator/unit_0/sub2/conv2/biases"])
    np.testing.assert_array_equal(params["unit_0"]["bn1"]["scale"], arrays["generator/unit_0/sub1/bn1/gamma"])
    np.testing.assert_array_equal(params["bn4"]["bias"], arrays["generator/bn4/beta"])
    np.testing.assert_array_equal(stats["bn5"]["var"], arrays["generator/bn5/moving_variance"])
    shadow = "generator/unit_0/sub2/bn2/generator/unit_0/sub2/bn2"
    np.testing.assert_array_equal(stats["unit_0"]["bn2"]["biased_var"], arrays[f"{shadow}/moving_variance/biased"])
    np.testing.assert_array_equal(stats["unit_0"]["bn2"]["biased_mean"], arrays[f"{shadow}/moving_mean/biased"])
    assert stats["unit_0"]["bn2"]["num_updates"] == 7
    assert report.loaded == len(arrays) and report.num_ignored == 0
    assert report.steady_state_batch_norms == ()


def test_missing_shadows_continue_as_plain_moving_average(tmp_path):
    arrays = tiny_generator_arrays(shadows=False)
    variables, report = load_tiny(tmp_path, arrays)
    assert len(report.steady_state_batch_norms) == 7
    stats = variables["generator"]["batch_stats"]["bn1"]
    assert stats["num_updates"] == STEADY_STATE_UPDATES
    # one train step afterwards: new mean = 0.9 * imported mean + 0.1 * batch mean
    images = np.random.RandomState(1).randn(2, 16, 16, 3).astype(np.float32)
    _, updated = TINY.apply(variables["generator"], images, jnp.array([0, 3]), train=True,
                            mutable=["batch_stats"])
    conv1 = variables["generator"]["params"]["conv1"]
    maps = np.zeros((2, 16, 16, 5), np.float32)
    maps[0, ..., 0] = maps[1, ..., 3] = 1
    pre_bn = jax.lax.conv_general_dilated(np.concatenate([images, maps], -1), conv1["kernel"], (1, 1),
                                          "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + conv1["bias"]
    batch_mean = np.asarray(pre_bn).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(updated["batch_stats"]["bn1"]["mean"],
                               0.9 * arrays["generator/bn1/moving_mean"] + 0.1 * batch_mean, rtol=1e-5, atol=1e-5)


def test_mismatch_lists_missing_unexpected_and_misshaped(tmp_path):
    arrays = tiny_generator_arrays(shadows=True)
    del arrays["generator/unit_0/sub1/conv1/weights"]
    arrays["generator/conv9/weights"] = np.zeros((3, 3, 2, 2), np.float32)
    arrays["generator/bn3/gamma"] = np.ones(5, np.float32)
    with pytest.raises(CheckpointMismatchError) as error:
        load_tiny(tmp_path, arrays)
    message = str(error.value)
    assert "tiny.model-1" in message
    assert "missing (1):" in message and "generator/unit_0/sub1/conv1/weights" in message
    assert "unexpected (1):" in message and "generator/conv9/weights" in message
    assert "wrong shape (1):" in message and "generator/bn3/gamma: checkpoint (5,), expected (8,)" in message


def test_incomplete_shadows_are_reported_missing(tmp_path):
    arrays = tiny_generator_arrays(shadows=True)
    name = "generator/bn2/generator/bn2/moving_variance/local_step"
    del arrays[name]
    with pytest.raises(CheckpointMismatchError, match=name):
        load_tiny(tmp_path, arrays)


def test_bookkeeping_names_are_ignored_and_counted(tmp_path):
    arrays = tiny_generator_arrays(shadows=True)
    extra = {"global_step": np.array(5, np.int64), "beta1_power": np.array(0.5, np.float32),
             "beta2_power_1": np.array(0.9, np.float32),
             "generator/conv1/weights/Adam": np.zeros(TINY_CONVS["conv1"], np.float32),
             "generator/conv1/weights/Adam_1": np.zeros(TINY_CONVS["conv1"], np.float32)}
    _, report = load_tiny(tmp_path, {**arrays, **extra})
    assert sorted(report.ignored) == sorted(extra) and report.num_ignored == 5


def test_unknown_network_name_is_refused():
    with pytest.raises(ValueError, match="unknown networks"):
        load_tf1_checkpoint("unused", expect={"gen": {}})


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.model-1"):
        load_tf1_checkpoint(str(tmp_path / "nothere.model-1"), expect={})


# ----------------------------------------------------------------------------- bvlc npy
SMALL_ALEXNET = AlexNet(fc_features=16)


def write_bvlc(path, rng, **overrides) -> dict:
    shapes = {"conv1": (11, 11, 3, 96), "conv2": (5, 5, 48, 256), "conv3": (3, 3, 256, 384),
              "conv4": (3, 3, 192, 384), "conv5": (3, 3, 192, 256), "fc6": (9216, 16),
              "fc7": (16, 16), "fc8": (16, 1000)}
    shapes.update(overrides)
    layers = {name: [rng.randn(*shape).astype(np.float32), rng.randn(shape[-1]).astype(np.float32)]
              for name, shape in shapes.items()}
    np.save(path, layers)  # the real file is a pickled dict, as np.save writes it
    return layers


def test_bvlc_npy_loads_trunk_and_reports_fc8(tmp_path, caplog):
    layers = write_bvlc(tmp_path / "bvlc_alexnet.npy", np.random.RandomState(0))
    with caplog.at_level(logging.INFO, logger="ipcgan_jax.weights.bvlc"):
        params = load_bvlc_alexnet(str(tmp_path / "bvlc_alexnet.npy"),
                                   expect=alexnet_variables_template(SMALL_ALEXNET))
    assert sorted(params) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
    for name in params:
        np.testing.assert_array_equal(params[name]["kernel"], layers[name][0])
        np.testing.assert_array_equal(params[name]["bias"], layers[name][1])
    assert "ignored 1 (fc8)" in caplog.text


def test_bvlc_npy_wrong_shape_and_missing_layer(tmp_path):
    layers = write_bvlc(tmp_path / "bad.npy", np.random.RandomState(0), conv3=(3, 3, 128, 384))
    del layers["fc7"]
    np.save(tmp_path / "bad.npy", layers)
    with pytest.raises(CheckpointMismatchError) as error:
        load_bvlc_alexnet(str(tmp_path / "bad.npy"), expect=alexnet_variables_template(SMALL_ALEXNET))
    assert "conv3/kernel: file (3, 3, 128, 384), expected (3, 3, 256, 384)" in str(error.value)
    assert "missing (1):\n    fc7" in str(error.value)


def test_bvlc_npy_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="bvlc_alexnet.npy"):
        load_bvlc_alexnet(str(tmp_path / "bvlc_alexnet.npy"))


# ----------------------------------------------------------------------------- CLI
def test_cli_help_lists_every_source(capsys):
    with pytest.raises(SystemExit) as exit_info:
        convert_main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--acgan", "--alexnet", "--age-classifier", "--bvlc", "--out"):
        assert option in text


def test_cli_refuses_nothing_to_do_and_missing_files(tmp_path, capsys):
    assert convert_main(["--out", str(tmp_path / "out")]) == 2
    assert "nothing to convert" in capsys.readouterr().err
    assert convert_main(["--bvlc", str(tmp_path / "none.npy"), "--out", str(tmp_path / "out")]) == 2
    assert "none.npy" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_reads_every_source_before_writing_and_names_bad_npy_files(tmp_path, capsys, monkeypatch):
    from ipcgan_jax import convert

    (tmp_path / "acgan.model-1.index").write_bytes(b"")
    monkeypatch.setattr(convert, "read_acgan", lambda source: [
        ("generator", {"params": {"w": np.ones(2, np.float32)}}, {"network": "generator"})])
    text = tmp_path / "text.npy"
    text.write_text("hello")
    np.save(tmp_path / "int_layer.npy", {"conv1": 5})
    out = tmp_path / "out"
    for npy, message in ((text, "not a pickled numpy dict of AlexNet layers"),
                         (tmp_path / "int_layer.npy", "layer 'conv1' should hold [weights, biases], got int")):
        argv = ["--acgan", str(tmp_path / "acgan.model-1"), "--bvlc", str(npy), "--out", str(out)]
        assert convert_main(argv) == 2
        err = capsys.readouterr().err
        last_line = err.strip().splitlines()[-1]  # after the progress bar
        assert last_line.startswith(f"error: {npy}: ") and message in last_line and "Traceback" not in err
        assert not out.exists(), "the generator read first is not written when a later source is bad"
