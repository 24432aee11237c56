"""The auxiliary networks: identity AlexNet, age classifier on its frozen trunk, evaluator."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ipcgan_jax import age_evaluator, checkpointing, configlib, tasks
from ipcgan_jax.classifiers import heads, splits
from ipcgan_jax.classifiers import tasks as classifier_tasks
from ipcgan_jax.classifiers import train as classifier_train
from ipcgan_jax.models import AgeEvaluator, AlexNet
from ipcgan_jax.runlib import frozen
from tests.helpers import config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quick_config(task: str, **overrides):
    config = config_file(task, "quick")
    config.update_from_flattened_dict(overrides)
    return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The three quick runs, in dependency order (the age classifier uses the trunk)."""
    root = tmp_path_factory.mktemp("classifiers")
    results = {}
    for task in configlib.CLASSIFIER_TASKS:
        config = quick_config(task)
        if task == "age_classifier":
            config.frozen.alexnet = "../alexnet_identity/export"
        results[task] = tasks.train_and_evaluate(config, str(root / task))
    return root, results


def train_losses(workdir):
    lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    return [l["train/loss"] for l in lines if "train/loss" in l]


@pytest.mark.parametrize("task", configlib.CLASSIFIER_TASKS)
def test_loss_falls(runs, task):
    root, _ = runs
    losses = train_losses(root / task)
    assert len(losses) == quick_config(task).num_steps
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


def test_exports_have_the_contracted_layers(runs):
    root, results = runs
    identity, _ = checkpointing.load_variables(str(root / "alexnet_identity" / "export"))
    assert set(identity) == {"params"}
    assert set(identity["params"]) == {"conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "new_1", "new_2"}
    config = quick_config("alexnet_identity")
    assert identity["params"]["new_2"]["kernel"].shape[-1] == config.model.alexnet.num_identities
    age, _ = checkpointing.load_variables(str(root / "age_classifier" / "export"))
    assert set(age) == {"params"} and set(age["params"]) == {"age_fc6", "age_fc7", "age_fc8"}
    assert age["params"]["age_fc8"]["kernel"].shape[-1] == 5
    evaluator, metadata = checkpointing.load_variables(str(root / "age_evaluator" / "export"))
    assert set(evaluator) == {"params", "batch_stats"}
    assert metadata["architecture"]["image_size"] == quick_config("age_evaluator").model.evaluator.image_size
    for task in configlib.CLASSIFIER_TASKS:
        np.testing.assert_array_equal(
            jax.tree.leaves(results[task].variables)[0],
            jax.tree.leaves(checkpointing.load_variables(str(root / task / "export"))[0])[0])


def test_exports_feed_the_gan(runs):
    """The GAN's own loader accepts the identity and age exports (shapes of its config)."""
    root, _ = runs
    gan_config = config_file("g75_conv5", "quick")
    gan_config.frozen.alexnet = str(root / "alexnet_identity" / "export")
    gan_config.frozen.age_classifier = str(root / "age_classifier" / "export")
    params = frozen.load_frozen_alexnet(gan_config, str(root))
    assert {"conv5", "new_2", "age_fc8"} <= set(params)


def test_age_head_on_frozen_trunk_matches_alexnet(runs):
    """The trained age head with its trunk, run through the plain AlexNet module (no
    dropout), gives the predictions the report counted."""
    root, results = runs
    config = quick_config("age_classifier")
    trunk, _ = checkpointing.load_variables(str(root / "alexnet_identity" / "export"))
    age, _ = checkpointing.load_variables(str(root / "age_classifier" / "export"))
    alexnet = AlexNet(**config.model.alexnet)
    images = jax.random.uniform(jax.random.key(0), (3, 67, 67, 3), minval=-120, maxval=130)
    expected = alexnet.apply({"params": {**trunk["params"], **age["params"]}}, images,
                             outputs=("age_logits",))["age_logits"]
    got = heads.age_head_logits(alexnet, trunk["params"], age["params"], images)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    expected_identity = alexnet.apply({"params": trunk["params"]}, images,
                                      outputs=("identity_logits",))["identity_logits"]
    identity_logits = heads.apply_head(heads.identity_head(alexnet), trunk["params"],
                                       heads.pool5_features(alexnet, trunk["params"], images))
    np.testing.assert_allclose(identity_logits, expected_identity, rtol=1e-5, atol=1e-5)


def test_age_classifier_trains_only_the_head(runs):
    root, _ = runs
    trunk_before, _ = checkpointing.load_variables(str(root / "alexnet_identity" / "export"))
    age, _ = checkpointing.load_variables(str(root / "age_classifier" / "export"))
    assert not set(age["params"]) & set(trunk_before["params"])


@pytest.mark.parametrize("task", configlib.CLASSIFIER_TASKS)
def test_reports(runs, task):
    root, results = runs
    report = root / task / "report"
    metrics = json.load(open(report / "metrics.json"))
    confusion = json.load(open(report / "confusion_matrix.json"))
    matrix = np.asarray(confusion["matrix"])
    assert matrix.shape == (len(confusion["classes"]),) * 2
    assert matrix.sum() == metrics["num_images"] == confusion["total"]
    assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert results[task].test_metrics["accuracy"] == pytest.approx(metrics["accuracy"])
    if task != "alexnet_identity":
        groups = np.arange(5)
        mae = (matrix * np.abs(groups[:, None] - groups[None, :])).sum() / matrix.sum()
        assert metrics["mae_groups"] == pytest.approx(mae)
        assert len(confusion["classes"]) == 5
    else:  # a held-out part of the training identities' images
        assert "held-out" in metrics["test_split"]
    from PIL import Image
    picture = np.asarray(Image.open(report / "confusion_matrix.png"))
    assert picture.ndim == 3 and picture.shape[0] > 50
    lines = [json.loads(l) for l in open(root / task / "metrics.jsonl")]
    assert any("eval/accuracy" in l for l in lines)


def test_rerun_resumes_without_training_again(runs):
    root, results = runs
    workdir = root / "age_evaluator"
    before = len(train_losses(workdir))
    again = tasks.train_and_evaluate(quick_config("age_evaluator"), str(workdir))
    assert len(train_losses(workdir)) == before
    assert again.test_metrics == pytest.approx(results["age_evaluator"].test_metrics)


def test_missing_trunk_fails_at_start_naming_the_command(tmp_path):
    config = quick_config("age_classifier")
    config.frozen.alexnet = str(tmp_path / "nowhere")
    with pytest.raises(checkpointing.CheckpointError, match="configs/alexnet_identity.py"):
        tasks.train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_mismatched_trunk_fails_at_start_naming_the_command(runs, tmp_path):
    root, _ = runs
    config = quick_config("age_classifier")
    config.frozen.alexnet = str(root / "alexnet_identity" / "export")
    config.model.alexnet.conv_features = (8, 8, 8, 8, 16)
    with pytest.raises(checkpointing.CheckpointError, match=r"conv5.*configs/alexnet_identity.py"):
        tasks.train_and_evaluate(config, str(tmp_path / "run"))


def test_evaluator_is_another_network_with_its_own_seed(runs):
    root, _ = runs
    module, variables, metadata = age_evaluator.load_age_evaluator(str(root / "age_evaluator" / "export"))
    assert isinstance(module, AgeEvaluator)
    alexnet_layers = {"conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "age_fc6", "age_fc7", "age_fc8"}
    assert not set(variables["params"]) & alexnet_layers
    seeds = {config_file(t).seed for t in configlib.CLASSIFIER_TASKS}
    assert len(seeds) == 3 and metadata["seed"] == config_file("age_evaluator").seed


def test_predict_age_groups_takes_uint8_faces_of_any_size(runs):
    root, _ = runs
    module, variables, _ = age_evaluator.load_age_evaluator(str(root / "age_evaluator" / "export"))
    faces = np.random.default_rng(0).integers(0, 256, (2, 50, 50, 3), dtype=np.uint8)
    logits = age_evaluator.predict_age_groups(module, variables, faces)
    assert logits.shape == (2, 5)
    # Independent scaling: resize with TF1 legacy bilinear in TF, then to [-1, 1].
    import tensorflow as tf
    resized = tf.compat.v1.image.resize_bilinear(faces.astype(np.float32), (module.image_size,) * 2).numpy()
    expected = module.apply(variables, jnp.asarray(resized / 127.5 - 1.0), train=False)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_per_image_holdout_keeps_every_identity_in_training():
    identity = np.repeat(np.arange(6), [1, 2, 5, 10, 10, 3])
    train_idx, holdout_idx = splits.per_image_holdout(identity, 0.2, seed=0)
    assert sorted(np.concatenate([train_idx, holdout_idx]).tolist()) == list(range(identity.size))
    assert set(identity[train_idx]) == set(range(6))
    assert np.bincount(identity[holdout_idx], minlength=6).tolist() == [0, 0, 1, 2, 2, 1]


def test_gan_variants_pretrain_the_three_networks_first():
    for variant in ("quick", "demo"):
        config = config_file("g75_conv5", variant)
        configlib.validate_config(config)
        assert list(config.pretrain.keys()) == ["alexnet_identity", "age_classifier", "age_evaluator"]
        assert config.frozen.alexnet == "alexnet_identity/export"
        age = config.pretrain.age_classifier
        assert age.frozen.alexnet == "../alexnet_identity/export"
        assert age.model.alexnet == config.model.alexnet == config.pretrain.alexnet_identity.model.alexnet
        for key in ("name", "num_identities", "images_per_identity", "size", "seed", "test_fraction",
                    "alexnet_size", "train_split", "test_split"):
            assert age.data[key] == config.data[key], key


def test_bad_classifier_values_are_refused():
    config = quick_config("age_evaluator")
    config.optimizer.name = "adagrad"
    with pytest.raises(configlib.ConfigError, match="optimizer.name"):
        configlib.validate_config(config)


def test_small_variants_train_the_trunk_with_an_auxiliary_age_term(runs):
    """The synthetic trunk learns age features through an auxiliary age head that is not
    exported; the CACD config keeps the original identity-only fine-tuning."""
    root, _ = runs
    assert config_file("alexnet_identity").auxiliary_age_weight == 0.0
    assert quick_config("alexnet_identity").auxiliary_age_weight > 0
    lines = [json.loads(l) for l in open(root / "alexnet_identity" / "metrics.jsonl")]
    aux = [l["train/auxiliary_age_loss"] for l in lines if "train/auxiliary_age_loss" in l]
    losses = [l["train/loss"] for l in lines if "train/loss" in l]
    assert len(aux) == len(losses) > 0
    assert all(total > a for total, a in zip(losses, aux)), "the total includes the identity term"
    identity, _ = checkpointing.load_variables(str(root / "alexnet_identity" / "export"))
    assert not any(name.startswith("age_") for name in identity["params"])


def test_identity_step_trains_both_heads_on_one_trunk_pass():
    """The identity step's loss and gradient are those of identity CE + weight x age CE,
    each computed by the plain AlexNet module (one independent forward per head)."""
    import optax

    config = quick_config("alexnet_identity")
    weight = config.auxiliary_age_weight
    task = classifier_tasks.identity_task(config, np.arange(20), tuple(map(str, range(20))))
    params = task.init_variables(jax.random.key(0))["params"]
    size = config.data.alexnet_size
    batch = {"image": jax.random.uniform(jax.random.key(1), (4, size, size, 3), minval=-120, maxval=130),
             "label": jnp.array([0, 3, 7, 19]), "age_group": jnp.array([0, 1, 4, 2])}
    alexnet = AlexNet(**config.model.alexnet)

    def reference_loss(params):
        identity = alexnet.apply({"params": params}, batch["image"], outputs=("identity_logits",))["identity_logits"]
        age = alexnet.apply({"params": params}, batch["image"], outputs=("age_logits",))["age_logits"]
        return (optax.softmax_cross_entropy_with_integer_labels(identity, batch["label"]).mean()
                + weight * optax.softmax_cross_entropy_with_integer_labels(age, batch["age_group"]).mean())

    state = classifier_train.ClassifierState(
        step=jnp.zeros((), jnp.int32), apply_fn=task.apply, params=params, tx=optax.sgd(1.0),
        opt_state=optax.sgd(1.0).init(params), batch_stats={})
    step = jax.jit(classifier_train.make_train_step(task, seed=0))
    new_state, metrics = step(state, batch, {})
    np.testing.assert_allclose(metrics["loss"], reference_loss(params), rtol=1e-5)
    expected = jax.tree.map(lambda p, g: p - g, params, jax.grad(reference_loss)(params))
    for name in ("conv1", "conv5", "new_2", "age_fc8"):
        np.testing.assert_allclose(new_state.params[name]["kernel"], expected[name]["kernel"], rtol=1e-4, atol=1e-6)


def test_balanced_class_weighting_weighs_each_image_by_its_group():
    """class_weighting='balanced': the evaluator's training loss is each image's cross
    entropy times N / (K n_g) for its group g (counted here by hand), averaged; 'none' is
    the plain mean. A group without training images, or an unknown value, is refused."""
    import types

    labels = np.array([0] * 6 + [1] * 2 + [2, 3] + [4] * 2)  # N = 12 over K = 5 groups
    faces = types.SimpleNamespace(age_group=labels, name="fake:train")
    config = quick_config("age_evaluator", class_weighting="balanced")
    configlib.validate_config(config)
    task = classifier_tasks.evaluator_task(config, faces)
    np.testing.assert_allclose(task.class_weights, [12 / 30, 12 / 10, 12 / 5, 12 / 5, 12 / 10], rtol=1e-6)
    assert classifier_tasks.evaluator_task(quick_config("age_evaluator"), faces).class_weights is None

    logits = np.random.default_rng(0).normal(size=(4, 5))
    batch_labels = np.array([0, 1, 2, 4])
    cross_entropy = np.log(np.exp(logits).sum(-1)) - logits[np.arange(4), batch_labels]
    weighted = classifier_train.classification_loss(jnp.asarray(logits), jnp.asarray(batch_labels),
                                                    task.class_weights)
    np.testing.assert_allclose(weighted, np.mean(np.array([12 / 30, 12 / 10, 12 / 5, 12 / 10]) * cross_entropy),
                               rtol=1e-5)
    plain = classifier_train.classification_loss(jnp.asarray(logits), jnp.asarray(batch_labels), None)
    np.testing.assert_allclose(plain, np.mean(cross_entropy), rtol=1e-5)

    with pytest.raises(ValueError, match=r"fake:train.*\[3\]"):
        classifier_tasks.evaluator_task(config, types.SimpleNamespace(age_group=labels[labels != 3],
                                                                      name="fake:train"))
    config.class_weighting = "sqrt"
    with pytest.raises(configlib.ConfigError, match="class_weighting"):
        configlib.validate_config(config)
