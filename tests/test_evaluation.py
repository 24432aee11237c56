"""Evaluation: FID math, identity judge, ground-truth errors and the end-to-end report."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from ipcgan_jax import age_evaluator, artefacts, checkpointing, evaluation, fid, identity, inference, preprocessing
from ipcgan_jax.constants import AGE_GROUP_LABELS, EVALUATOR_IN_WORKDIR, NUM_AGE_GROUPS
from ipcgan_jax.data import framing, sources, synthetic
from ipcgan_jax.data.pack import pack_splits
from ipcgan_jax.models import AgeEvaluator
from tests.helpers import config_file
from tests.test_inference import make_gan_workdir


# ----------------------------------------------------------------------------- FID
def test_frechet_distance_of_diagonal_gaussians_has_a_closed_form():
    rng = np.random.default_rng(0)
    mean_a, mean_b = rng.normal(size=6), rng.normal(size=6)
    var_a, var_b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    got = fid.frechet_distance(mean_a, np.diag(var_a), mean_b, np.diag(var_b))
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_a_symmetric_form_for_full_covariances():
    """Tr((A B)^1/2) = Tr((A^1/2 B A^1/2)^1/2), computed here with eigendecompositions only."""
    rng = np.random.default_rng(1)
    features_a, features_b = rng.normal(size=(50, 5)), rng.normal(size=(40, 5)) @ rng.normal(size=(5, 5))

    def psd_root(matrix):
        values, vectors = np.linalg.eigh(matrix)
        return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T

    mean_a, cov_a = features_a.mean(0), np.cov(features_a, rowvar=False)
    mean_b, cov_b = features_b.mean(0), np.cov(features_b, rowvar=False)
    root_a = psd_root(cov_a)
    expected = (np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b)
                - 2 * np.trace(psd_root(root_a @ cov_b @ root_a)))
    assert fid.fid_from_features(features_a, features_b) == pytest.approx(expected, rel=1e-7)
    assert fid.fid_from_features(features_a, features_a) == pytest.approx(0.0, abs=1e-7)


def test_fid_rejects_bad_inputs():
    with pytest.raises(ValueError, match="N >= 2"):
        fid.feature_statistics(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="mismatched"):
        fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="package.module:factory"):
        fid.load_feature_extractor("no_colon")
    with pytest.raises(ValueError, match="cannot be loaded"):
        fid.load_feature_extractor("tests.test_evaluation:missing")


def colour_features():
    """A stand-in FID extractor for the end-to-end test: per-channel mean and std."""
    def extract(images):
        pixels = np.asarray(images, np.float64).reshape(len(images), -1, 3)
        return np.concatenate([pixels.mean(1), pixels.std(1)], axis=1)
    return extract


# ----------------------------------------------------------------------------- identity and pixels
def test_identity_descriptors_separate_people():
    settings = framing.synthetic_alignment(64)
    embedder = identity.FaceEmbedder(settings.padding, settings.vertical_shift)
    identities = synthetic.sample_identities(4, seed=3)
    rows = np.repeat(np.arange(4), 2)
    faces = synthetic.render_faces(identities.take(rows), np.zeros(8, int), size=64, nuisance_seed=np.arange(8))
    codes = embedder.embed(faces)
    same = identity.descriptor_distance(codes[0::2], codes[1::2])
    different = identity.descriptor_distance(codes[0::2], np.roll(codes[1::2], 1, axis=0))
    assert same.mean() < different.mean() and np.all(same < identity.VERIFICATION_THRESHOLD)
    cos_same = identity.cosine_similarity(codes[0::2], codes[1::2])
    assert cos_same.mean() > identity.cosine_similarity(codes[0::2], np.roll(codes[1::2], 1, axis=0)).mean()
    np.testing.assert_allclose(identity.cosine_similarity(codes, codes), 1.0, atol=1e-6)
    np.testing.assert_allclose(codes, embedder.embed(faces))  # deterministic


def test_pixel_errors():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[0] = 10
    mae, psnr = evaluation.pixel_errors(a, b)
    np.testing.assert_allclose(mae, [10.0, 0.0])
    np.testing.assert_allclose(psnr, [20 * np.log10(255 / 10), 100.0])


# ----------------------------------------------------------------------------- image artefacts
def test_periodic_component_solves_moisans_equation():
    """p is periodic with p's periodic Laplacian = u's Laplacian inside the image, and u's mean."""
    u = np.random.default_rng(2).uniform(0, 255, (2, 8, 12, 3))
    p = artefacts.periodic_component(u)
    periodic_laplacian = sum(np.roll(p, step, axis=axis) for step in (1, -1) for axis in (1, 2)) - 4 * p
    interior_laplacian = np.zeros_like(u)  # sums only the neighbours inside the image
    for axis in (1, 2):
        head, tail = [slice(None)] * 4, [slice(None)] * 4
        head[axis], tail[axis] = slice(None, -1), slice(1, None)
        difference = u[tuple(tail)] - u[tuple(head)]
        interior_laplacian[tuple(head)] += difference
        interior_laplacian[tuple(tail)] -= difference
    np.testing.assert_allclose(periodic_laplacian, interior_laplacian, atol=1e-9)
    np.testing.assert_allclose(p.mean(axis=(1, 2)), u.mean(axis=(1, 2)), atol=1e-9)


def test_grid_artefact_power_is_the_power_at_the_period_4_frequencies():
    images = np.random.default_rng(3).uniform(0, 255, (2, 8, 12, 3))
    p = artefacts.periodic_component(images)
    # A direct DFT sum over the 15 frequencies (k H/4, l W/4), (k, l) != (0, 0) ...
    y, x = np.arange(8)[:, None], np.arange(12)[None, :]
    direct = np.zeros(2)
    for k in range(4):
        for l in range(4):
            if (k, l) != (0, 0):
                basis = np.exp(-2j * np.pi * (k * y / 4 + l * x / 4))
                direct += np.mean(np.abs(np.einsum("nyxc,yx->nc", p, basis)) ** 2, axis=-1)
    direct /= (8 * 12) ** 2
    np.testing.assert_allclose(artefacts.grid_artefact_power(images), direct, rtol=1e-9)
    # ... is the variance of the 4x4 tile of phase means (pixels at each (y mod 4, x mod 4)).
    tile = p.reshape(2, 2, 4, 3, 4, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(direct, tile.var(axis=(1, 2)).mean(-1), rtol=1e-9)
    with pytest.raises(ValueError, match="divisible by 4"):
        artefacts.grid_artefact_power(images[:, :6])
    assert artefacts.power_ratio([1.0], [0.0]) is None and artefacts.power_ratio([], [1.0]) is None


def test_grid_artefact_ratio_is_near_one_on_faces_and_far_above_with_a_faint_grid():
    # Two sets of 64 faces: a face's power varies tenfold (hard edges, noise), so fewer
    # faces leave the ratio of two sets of real faces well away from 1.
    rows = np.arange(128)
    faces = synthetic.render_faces(synthetic.sample_identities(128, seed=4).take(rows), rows % 5, size=64,
                                   nuisance_seed=rows)
    reference_power = artefacts.grid_artefact_power(faces[64:])
    assert 0.67 < artefacts.power_ratio(artefacts.grid_artefact_power(faces[:64]), reference_power) < 1.5
    y, x = np.mgrid[:64, :64]
    patterns = {"checkerboard": (-1.0) ** (y + x), "2x2 blocks": (-1.0) ** (y // 2 + x // 2),
                "stripes every 4 px": (-1.0) ** (y // 2)}
    for name, pattern in patterns.items():  # amplitude 3 of 255
        gridded = np.clip(np.rint(faces[:64] + 3 * pattern[..., None]), 0, 255)
        ratio = artefacts.power_ratio(artefacts.grid_artefact_power(gridded), reference_power)
        assert ratio > 5.0, (name, ratio)
        # Shifted crops (every phase of the pattern) measure nearly the same power.
        crops = [artefacts.grid_artefact_power(gridded[:16, o:o + 60, o:o + 60]).mean() for o in range(4)]
        assert max(crops) < 1.15 * min(crops), (name, crops)
    crops = [artefacts.grid_artefact_power(faces[:16, o:o + 60, o:o + 60]).mean() for o in range(4)]
    assert max(crops) < 1.15 * min(crops), crops


def test_colour_cast_is_the_shift_of_the_mean_chroma():
    images = np.random.default_rng(5).integers(30, 200, (3, 8, 8, 3)).astype(np.uint8)
    for image in images:  # against PIL's RGB -> YCbCr (JPEG's) of the mean colour
        mean_colour = np.rint(image.reshape(-1, 3).mean(0)).astype(np.uint8)[None, None]
        pil = np.asarray(Image.fromarray(mean_colour).convert("YCbCr"), np.float64)[0, 0, 1:] - 128
        np.testing.assert_allclose(artefacts.mean_chroma(image), pil, atol=1.0)
    np.testing.assert_allclose(artefacts.colour_cast(images + 20, images), 0.0, atol=1e-9)  # brightness only
    magenta = images + np.array([12, 0, 12], np.uint8)
    tinted_grey = Image.fromarray(np.array([[[112, 100, 112]]], np.uint8)).convert("YCbCr")  # grey has Cb = Cr = 128
    pil_shift = np.hypot(*(np.asarray(tinted_grey, np.float64)[0, 0, 1:] - 128))
    np.testing.assert_allclose(artefacts.colour_cast(magenta, images), pil_shift, atol=0.75)
    with pytest.raises(ValueError, match="RGB"):
        artefacts.mean_chroma(images[..., :2])


def test_high_frequency_energy_sees_stripes_and_not_smooth_changes():
    rows = np.arange(16, dtype=np.float64)[:, None, None]
    ramp = np.broadcast_to(3.0 * rows + 2.0 * np.arange(16)[None, :, None], (16, 16, 3))  # lighting, greying
    np.testing.assert_allclose(artefacts.high_frequency_energy(ramp[None]), [0.0], atol=1e-18)
    # horizontal stripes +-a on alternate rows: every second difference down the columns
    # is +-4a, none along the rows
    a = 2.5
    stripes = np.broadcast_to(a * (-1.0) ** rows, (16, 16, 3))
    np.testing.assert_allclose(artefacts.high_frequency_energy(stripes[None]), [16 * a * a])
    transposed = np.swapaxes(stripes, 0, 1)  # vertical stripes: the same energy, along the rows
    np.testing.assert_allclose(artefacts.high_frequency_energy(np.stack([stripes, transposed])),
                               [16 * a * a] * 2)


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    workdir = make_gan_workdir(tmp_path_factory.mktemp("eval") / "run")
    architecture = dict(stage_features=[4, 8], blocks_per_stage=1, num_groups=5, image_size=32)
    module = AgeEvaluator(stage_features=(4, 8), blocks_per_stage=1, num_groups=5, image_size=32)
    variables = module.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    checkpointing.save_variables(os.path.join(workdir, "age_evaluator", "export"), variables,
                                 {"task": "age_evaluator", "architecture": architecture})
    config = config_file("eval")
    config.max_faces = 3
    config.batch_size = 2
    config.num_sample_faces = 2
    config.fid_feature_extractor = "tests.test_evaluation:colour_features"
    before = sorted(os.listdir(workdir))
    return workdir, before, evaluation.evaluate(config, workdir), config


def test_evaluation_writes_report_with_metrics_in_range(evaluated):
    workdir, before, results, _ = evaluated
    out = os.path.join(workdir, "eval", "step_3")
    assert results["output_dir"] == out
    assert sorted(os.listdir(out)) == ["results.json", "results.md", "samples.png"]
    assert sorted(os.listdir(workdir)) == sorted(before + ["eval"])
    with open(os.path.join(out, "results.json")) as f:
        stored = json.load(f)
    assert stored["num_source_faces"] == 3 and stored["step"] == 3
    assert stored["generator_weights"] == "live"  # the run kept no average of G's weights
    assert list(stored["per_group"]) == ["11-20", "21-30", "31-40", "41-50", "51+"]
    for row in list(stored["per_group"].values()) + [stored["overall"]]:
        assert 0 <= row["age_accuracy"] <= 1 and 0 <= row["mean_estimated_group"] <= 4
        assert 0 <= row["identity_verification_rate"] <= 1 and -1 <= row["identity_mean_cosine"] <= 1
        assert np.isfinite(row["fid"]) and row["fid"] >= -1e-9
        assert 0 <= row["gt_same_mae"] <= 255 and row["gt_same_psnr"] > 0
        assert 0 <= row["gt_canonical_mae"] <= 255 and 0 <= row["copy_input_mae"] <= 255
        assert row["grid_artefact_ratio"] > 0 and row["real_grid_artefact_ratio"] > 0
        assert 0 <= row["colour_cast"] < 255 and 0 <= row["gt_colour_cast"] < 255
    assert stored["per_group"]["11-20"]["num_outputs"] == 3
    markdown = open(os.path.join(out, "results.md")).read()
    assert "| 51+ |" in markdown and "| overall |" in markdown and "GT MAE" in markdown
    assert "grid ratio" in markdown and "colour cast" in markdown
    sheet = np.asarray(Image.open(os.path.join(out, "samples.png")))
    assert sheet.shape[0] >= 4 * 32 and sheet.shape[1] >= 6 * 32  # 2 faces x (output, truth) rows


def test_ground_truth_is_the_source_photo_at_its_own_group(evaluated):
    """Sources are from group 0: the regenerated truth at group 0 is the input itself."""
    _, _, results, _ = evaluated
    assert results["per_group"]["11-20"]["copy_input_mae"] == 0.0
    assert results["per_group"]["11-20"]["gt_colour_cast"] == 0.0
    assert results["per_group"]["51+"]["copy_input_mae"] > 1.0  # ageing changes the face


def test_evaluation_never_overwrites_and_reports_skips(evaluated):
    workdir, _, first, config = evaluated
    config = config.copy_and_resolve_references()
    config.max_faces, config.fid_feature_extractor = 1, ""
    config.evaluator = "nowhere/export"  # a path the user gave that is not there: refused, nothing written
    with pytest.raises(evaluation.ConfigError, match=f"no exported age evaluator at {workdir}/nowhere/export"):
        evaluation.evaluate(config, workdir)
    assert sorted(os.listdir(os.path.join(workdir, "eval"))) == ["step_3"]
    config.evaluator = EVALUATOR_IN_WORKDIR  # the default place, where this run trained none: skipped
    trained_here = os.path.join(workdir, os.path.dirname(EVALUATOR_IN_WORKDIR))
    os.rename(trained_here, trained_here + "_away")
    try:
        second = evaluation.evaluate(config, workdir)
    finally:
        os.rename(trained_here + "_away", trained_here)
    assert second["output_dir"] == os.path.join(workdir, "eval", "step_3_2")
    assert os.path.exists(os.path.join(first["output_dir"], "results.json"))
    assert "age_accuracy" not in second["overall"] and "fid" not in second["overall"]
    assert any("no exported age evaluator" in m for m in second["messages"])
    assert any("FID skipped" in m for m in second["messages"])
    config.bn_mode = "sideways"
    with pytest.raises(evaluation.ConfigError, match="bn_mode"):
        evaluation.evaluate(config, workdir)
    config.bn_mode, config.generator_weights = "", "ema"
    with pytest.raises(evaluation.ConfigError, match="generator_weights"):
        evaluation.evaluate(config, workdir)


def test_output_folders_tell_the_live_weights_from_the_average(tmp_path):
    workdir = str(tmp_path)
    assert evaluation.fresh_output_dir(workdir, 7) == os.path.join(workdir, "eval", "step_7")
    assert evaluation.fresh_output_dir(workdir, 7, "live") == os.path.join(workdir, "eval", "step_7_live")
    assert evaluation.fresh_output_dir(workdir, 7) == os.path.join(workdir, "eval", "step_7_2")


def test_evaluation_reads_the_test_faces_from_a_pack_given_in_its_config(evaluated, tmp_path):
    """--config.data.packed_path: e.g. a run trained from a pack elsewhere (launch/gpu_check.sh)."""
    workdir, _, _, config = evaluated
    run_config = inference.read_run_config(workdir)
    packed_path = str(tmp_path / "packed")
    pack_splits(run_config.data, [run_config.data.test_split], packed_path, max_per_group=1)
    config = config.copy_and_resolve_references()
    config.fid_feature_extractor, config.evaluator = "", ""
    config.data.packed_path = packed_path
    results = evaluation.evaluate(config, workdir)
    assert results["num_source_faces"] == 1  # one face per group in the pack; 3 in the dataset
    assert any(f"the test faces come from a pack ({packed_path})" in m for m in results["messages"])


def test_age_ceiling_is_the_evaluator_on_real_faces_of_each_group(evaluated):
    workdir, _, results, _ = evaluated
    run_config = inference.read_run_config(workdir)
    faces = sources.load_faces(run_config.data, run_config.data.test_split)
    module, variables, _ = age_evaluator.load_age_evaluator(os.path.join(workdir, "age_evaluator", "export"))
    size = int(run_config.data.image_size)
    pixels = np.asarray(jnp.clip(jnp.round(preprocessing.legacy_resize_bilinear(
        jnp.asarray(faces.images(np.arange(len(faces))), jnp.float32), size, size)), 0, 255).astype(jnp.uint8))
    predicted = np.argmax(np.asarray(age_evaluator.predict_age_groups(module, variables, pixels)), -1)
    for group, label in enumerate(AGE_GROUP_LABELS):
        row = results["per_group"][label]
        mine = predicted[faces.age_group == group]
        assert row["real_mean_estimated_group"] == pytest.approx(mine.mean())
        assert row["real_age_accuracy"] == pytest.approx(np.mean(mine == group))
    assert results["overall"]["real_age_accuracy"] == pytest.approx(results["evaluator_accuracy_on_real_test_faces"])
    # The grid-artefact reference: real faces of each group against the evaluated inputs
    # (the first 3 source faces, at the generator's size like every real face here).
    power = artefacts.grid_artefact_power(pixels)
    input_power = power[np.flatnonzero(np.isin(faces.age_group, run_config.data.source_groups))[:3]].mean()
    for group, label in enumerate(AGE_GROUP_LABELS):
        expected = power[faces.age_group == group].mean() / input_power
        assert results["per_group"][label]["real_grid_artefact_ratio"] == pytest.approx(expected, rel=1e-3)
    assert results["overall"]["real_grid_artefact_ratio"] == pytest.approx(power.mean() / input_power, rel=1e-3)
    markdown = open(os.path.join(results["output_dir"], "results.md")).read()
    assert "real faces: mean est. group" in markdown


def test_truth_ceilings_are_the_evaluator_and_dlib_on_the_true_aged_faces(evaluated):
    """gt_age_accuracy / gt_mean_estimated_group / gt_identity_verification_rate: the
    evaluator on each pair's true aged face and dlib on it against the input."""
    workdir, _, results, config = evaluated
    run_config = inference.read_run_config(workdir)
    faces = sources.load_faces(run_config.data, run_config.data.test_split)
    rows = faces.indices_of_groups(tuple(run_config.data.source_groups))[:config.max_faces]
    ager = inference.FaceAger.from_checkpoint(workdir)
    truth = evaluation.SyntheticTruth(run_config.data, run_config.data.test_split, faces, ager.image_size)
    module, variables, _ = age_evaluator.load_age_evaluator(os.path.join(workdir, "age_evaluator", "export"))
    input_pixels = inference.generator_input_pixels(ager.to_generator_input(faces.images(rows)))
    layout = ager.loaded.alignment
    embedder = identity.FaceEmbedder(layout.padding, layout.vertical_shift)
    input_codes = embedder.embed(input_pixels)
    outputs = ager.age_generator_inputs(ager.to_generator_input(faces.images(rows)), list(range(NUM_AGE_GROUPS)))

    def second_difference_energy(images):
        x = np.asarray(images, np.float64)
        return (np.square(np.diff(x, n=2, axis=1)).mean(axis=(1, 2, 3))
                + np.square(np.diff(x, n=2, axis=2)).mean(axis=(1, 2, 3)))

    all_predicted, all_verified = [], []
    for group, label in enumerate(AGE_GROUP_LABELS):
        aged = truth.render(rows, np.full(len(rows), group), same_photo=True)
        truth_energy = second_difference_energy(aged).mean()
        assert results["per_group"][label]["residual_hf_ratio"] == pytest.approx(
            second_difference_energy(outputs[:, group].astype(np.float64) - aged).mean() / truth_energy)
        assert results["per_group"][label]["copy_input_residual_hf_ratio"] == pytest.approx(
            second_difference_energy(input_pixels.astype(np.float64) - aged).mean() / truth_energy)
        predicted = np.argmax(np.asarray(age_evaluator.predict_age_groups(module, variables, aged)), -1)
        verified = identity.descriptor_distance(input_codes, embedder.embed(aged)) < config.identity_threshold
        row = results["per_group"][label]
        assert row["gt_age_accuracy"] == pytest.approx(np.mean(predicted == group))
        assert row["gt_mean_estimated_group"] == pytest.approx(predicted.mean())
        assert row["gt_identity_verification_rate"] == pytest.approx(verified.mean())
        all_predicted.append(predicted == group)
        all_verified.append(verified)
    # At the source's own group the true aged face is the input: dlib verifies every one.
    assert results["per_group"]["11-20"]["gt_identity_verification_rate"] == 1.0
    assert results["overall"]["gt_age_accuracy"] == pytest.approx(np.mean(all_predicted))
    assert results["overall"]["gt_identity_verification_rate"] == pytest.approx(np.mean(all_verified))
    markdown = open(os.path.join(results["output_dir"], "results.md")).read()
    assert "true aged: age acc." in markdown and "true aged: verif. rate" in markdown
    assert "residual HF" in markdown
