"""The real-face recipe (configs/utkface.py): G's residual output, the config's deviations,
exported and shipped generators, the photo tool's default model, and an end-to-end
`:quick` run on folders laid out like UTKFace's."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import utkface
from ipcgan_jax import age, artefacts, export, inference, tasks
from ipcgan_jax.constants import CAFFE_MEAN_BGR
from ipcgan_jax.data import build
from ipcgan_jax.models import Generator
from ipcgan_jax.models.layers import ConvTransposeSame
from ipcgan_jax.runlib import workdir as workdir_lib
from tests.helpers import assert_resumes_only_at_default, config_file, tiny_gan_config
from tests.test_image_folder import _write_utk_folder
from tests.test_inference import make_gan_workdir, synthetic_faces

UTKFACE_AGES = [12, 14, 16, 18, 19, 20, 22, 25, 28, 33, 37, 44, 47, 52, 60, 71] * 4  # >= 10 per gender x race


# ----------------------------------------------------------------------------- generator
def test_residual_generator_starts_as_the_identity_map():
    faces = synthetic_faces(4, 32).astype(np.float32)
    g_input = jnp.asarray(faces) - jnp.asarray(CAFFE_MEAN_BGR)
    generator = Generator(base_features=4, num_res_blocks=1, residual_output=True)
    variables = generator.init(jax.random.key(0), g_input, jnp.arange(4), train=True)
    out, _ = generator.apply(variables, g_input, jnp.arange(4), train=True, mutable=["batch_stats"])
    pixels = (np.asarray(out) + 1.0) * 127.5
    np.testing.assert_allclose(pixels, np.clip(faces, 0.1275, 254.8725), atol=2e-3)  # the 0.999 clip
    # ... and is still a function of its parameters: perturbing conv4 changes the output.
    params = jax.tree.map(lambda x: x, variables["params"])
    params["conv4"]["bias"] = params["conv4"]["bias"] + 0.5
    moved, _ = generator.apply({**variables, "params": params}, g_input, jnp.arange(4), train=True,
                               mutable=["batch_stats"])
    assert np.abs(np.asarray(moved) - np.asarray(out)).mean() > 0.05


def test_faithful_generator_is_not_residual():
    assert config_file("g75_conv5").model.generator.residual_output is False
    generator = Generator(base_features=4, num_res_blocks=1)
    g_input = jnp.asarray(synthetic_faces(2, 32), jnp.float32) - jnp.asarray(CAFFE_MEAN_BGR)
    variables = generator.init(jax.random.key(0), g_input, jnp.arange(2), train=True)
    out, _ = generator.apply(variables, g_input, jnp.arange(2), train=True, mutable=["batch_stats"])
    assert np.abs((np.asarray(out) + 1) * 127.5 - np.asarray(synthetic_faces(2, 32))).mean() > 20


def test_resize_conv_generator_draws_no_grid_where_transposed_convs_do():
    """The same parameters (the upsampling kernels have the same shape in every impl) through
    G with transposed convs and with resize-convs, at init, on faces: the transposed convs
    stamp a 2/4-pixel pattern (grid power several times the input's), the resize-convs not."""
    faces = synthetic_faces(2, 32)
    g_input = jnp.asarray(faces, jnp.float32) - jnp.asarray(CAFFE_MEAN_BGR)
    ratios = {}
    for seed in range(2):
        variables = Generator(base_features=4, num_res_blocks=1).init(jax.random.key(seed), g_input, jnp.arange(2),
                                                                      train=True)
        for impl in ("subpixel", "resize_conv"):
            out, _ = Generator(base_features=4, num_res_blocks=1, deconv_impl=impl).apply(
                variables, g_input, jnp.arange(2), train=True, mutable=["batch_stats"])
            pixels = np.clip(np.rint((np.asarray(out) + 1) * 127.5), 0, 255)
            ratios[impl, seed] = artefacts.power_ratio(artefacts.grid_artefact_power(pixels),
                                                       artefacts.grid_artefact_power(faces))
    for seed in range(2):
        assert ratios["subpixel", seed] > 2.5 and ratios["resize_conv", seed] < 1.0, ratios


def test_resize_conv_upsampling_is_nearest_neighbour_then_a_same_conv():
    x = jax.random.normal(jax.random.key(0), (2, 5, 5, 6))
    layer = ConvTransposeSame(4, impl="resize_conv")
    variables = layer.init(jax.random.key(1), x)
    y = np.asarray(layer.apply(variables, x))
    kernel = np.asarray(variables["params"]["kernel"])  # TF's transposed layout (kh, kw, out, in)
    up = np.pad(np.asarray(x).repeat(2, axis=1).repeat(2, axis=2), ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = np.zeros((2, 10, 10, 4))
    for i in range(10):
        for j in range(10):
            expected[:, i, j] = np.einsum("nabi,aboi->no", up[:, i:i + 3, j:j + 3], kernel)
    np.testing.assert_allclose(y, expected, atol=1e-5)
    # No checkerboard: a constant input gives a constant output away from the borders,
    # which a 3x3 stride-2 transposed conv does not.
    flat = jnp.ones((1, 6, 6, 6))
    inner = np.asarray(layer.apply(variables, flat))[0, 2:-2, 2:-2]
    assert np.ptp(inner, axis=(0, 1)).max() < 1e-5
    transposed = np.asarray(ConvTransposeSame(4).apply(variables, flat))[0, 2:-2, 2:-2]
    assert np.ptp(transposed, axis=(0, 1)).max() > 1e-3


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("arg", ["", "cpu", "quick", "h200"])
def test_utkface_config_names_its_deviations(arg):
    config = config_file("utkface", arg)
    assert (config.data.name, config.data.builder_config, config.data.alignment_template) == (
        "image_folder", "utkface", "utkface")
    assert config.model.generator.residual_output and config.data.mixed_age
    assert config.model.generator.deconv_impl == "resize_conv"
    assert tuple(config.data.source_groups) == (0, 1)
    assert config.loss.age_weight == utkface.AGE_WEIGHT == 10.0
    assert list(config.pretrain) == ["alexnet_identity", "age_classifier", "age_evaluator"]
    for sub in config.pretrain.values():
        assert (sub.data.builder_config, sub.data.data_dir) == ("utkface", "workdirs/tfds")
    identity = config.pretrain.alexnet_identity
    assert identity.model.alexnet.num_identities == 10 == config.model.alexnet.num_identities
    assert identity.auxiliary_age_weight == 1.0
    evaluator = config.pretrain.age_evaluator
    assert evaluator.class_weighting == "balanced"
    assert len(evaluator.model.evaluator.stage_features) == {"": 4, "cpu": 4, "quick": 2, "h200": 4}[arg]
    paper = config_file("g75_conv5")
    expected_size = {"": 128, "cpu": 64, "quick": 32, "h200": 128}[arg]
    assert config.data.image_size == expected_size
    if arg == "h200":  # the full-size recipe; only the frozen networks' budgets differ
        full = config_file("utkface")
        assert config.model.to_dict() == full.model.to_dict() and config.loss.to_dict() == full.loss.to_dict()
        assert config.num_steps == full.num_steps == paper.num_steps
        assert {task: sub.num_steps for task, sub in config.pretrain.items()} == utkface.H200_STEPS
        for task, sub in config.pretrain.items():
            expected = full.pretrain[task].copy_and_resolve_references()
            expected.num_steps, expected.eval_every = sub.num_steps, sub.num_steps
            assert sub.to_dict() == expected.to_dict(), task
    elif not arg:
        assert config.model.generator.base_features == paper.model.generator.base_features
        assert config.loss.feature_weight == pytest.approx(paper.loss.feature_weight * utkface.IDENTITY_WEIGHT_FACTOR)
    else:
        assert config.loss.feature_weight == pytest.approx(
            paper.loss.feature_weight * utkface.IDENTITY_WEIGHT_FACTOR * 43_264 / 2_304, abs=5e-6)


def test_utkface_config_reads_a_pack_for_every_network():
    config = config_file("utkface", "variant=h200,packed=/data/utk_pack")
    for data in [config.data] + [sub.data for sub in config.pretrain.values()]:
        assert (data.packed_path, data.backend) == ("/data/utk_pack", "numpy")
    assert config_file("utkface", "h200").data.packed_path == ""


def test_recorded_config_without_a_later_field_resumes_at_its_default(tmp_path):
    assert_resumes_only_at_default(tiny_gan_config(), str(tmp_path / "run"), "model.generator.residual_output",
                                   True)


# ----------------------------------------------------------------------------- export
def test_export_carries_the_run_config_and_ages_like_the_run(tmp_path):
    workdir = make_gan_workdir(tmp_path / "run")
    out = tmp_path / "exported"
    assert export.main([f"--workdir={workdir}", f"--out={out}", "--note=test"]) == 0
    with open(out / "metadata.json") as f:
        metadata = json.load(f)
    assert metadata["step"] == 3 and metadata["note"] == "test" and metadata["run_config"]["task"] == "gan"
    from_run, from_export = inference.FaceAger.from_checkpoint(workdir), inference.FaceAger.from_checkpoint(str(out))
    assert from_export.image_size == from_run.image_size and from_export.loaded.alignment == from_run.loaded.alignment
    faces = synthetic_faces(2, 48)
    np.testing.assert_array_equal(from_export.age_aligned(faces, [0, 4]), from_run.age_aligned(faces, [0, 4]))
    with pytest.raises(FileExistsError):
        export.export_generator(workdir, str(out))  # never overwritten


def test_photo_tool_defaults_to_the_shipped_model_and_flags_synthetic_ones(tmp_path, monkeypatch, capsys):
    shipped = tmp_path / "pretrained"
    export.export_generator(make_gan_workdir(tmp_path / "run"), str(shipped / inference.DEFAULT_PRETRAINED))
    monkeypatch.setattr(inference, "PRETRAINED_DIR", str(shipped))
    with pytest.raises(FileNotFoundError, match="no shipped generator 'nothing'"):
        inference.FaceAger.from_pretrained("nothing")
    photos = tmp_path / "photos"
    photos.mkdir()
    canvas = np.full((160, 160, 3), 90, np.uint8)
    canvas[16:144, 16:144] = synthetic_faces(1, 128)[0]
    Image.fromarray(canvas).save(photos / "face.png")
    age.main([str(photos), f"--out={tmp_path / 'aged'}"])
    err = capsys.readouterr().err
    assert str(shipped / inference.DEFAULT_PRETRAINED) in err
    assert "trained on the built-in synthetic (drawn) faces" in err  # the tiny run's data is synthetic


def test_shipped_model_ages_a_face_and_documents_itself():
    ager = inference.FaceAger.from_pretrained()
    metadata = json.load(open(os.path.join(inference.PRETRAINED_DIR, inference.DEFAULT_PRETRAINED,
                                           "metadata.json")))
    config = metadata["run_config"]
    assert config["data"]["builder_config"] == "utkface" and not ager.trained_on_synthetic_faces
    assert metadata["step"] == config["num_steps"] and "seed" in config and "evaluation" in metadata
    assert ager.loaded.alignment.template == "utkface"
    outputs = ager.age_aligned(synthetic_faces(1, ager.loaded.alignment.output_size), None)
    assert outputs.shape[:2] == (1, 5) and outputs.dtype == np.uint8
    size = sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in
               os.walk(os.path.join(inference.PRETRAINED_DIR, inference.DEFAULT_PRETRAINED)) for name in names)
    assert size < 10 * 2 ** 20


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow  # about 2 minutes on two cores: `pytest -m slow tests/test_real_faces.py`
def test_quick_recipe_trains_on_utkface_like_folders_and_ages(tmp_path):
    folders = []
    for seed, name in enumerate(("utk_a", "utk_b")):
        _write_utk_folder(tmp_path / name, UTKFACE_AGES, seed)
        folders.append(str(tmp_path / name))
    data_dir = tmp_path / "tfds"
    assert build.main(["image_folder", "--config=utkface", f"--manual_dir={','.join(folders)}",
                       f"--data_dir={data_dir}", "--num_workers=1"]) == 0
    config = config_file("utkface", f"variant=quick,data_dir={data_dir}")
    workdir = str(tmp_path / "run")
    tasks.train_and_evaluate(config, workdir)
    for sub in ("alexnet_identity", "age_classifier", "age_evaluator"):
        assert workdir_lib.has_export(os.path.join(workdir, sub))
    with open(os.path.join(workdir, "alexnet_identity", "export", "metadata.json")) as f:
        assert len(json.load(f)["identity_classes"]) == 10  # gender x race
    ager = inference.FaceAger.from_checkpoint(workdir)
    assert ager.loaded.alignment.template == "utkface" and ager.loaded.step == config.num_steps
    outputs = ager.age_aligned(synthetic_faces(2, 48), None)
    assert outputs.shape == (2, 5, 32, 32, 3) and not ager.trained_on_synthetic_faces
