"""The config files: each loads as main.py loads it and passes validation; the ablation
config reproduces the nine former ablation files; bad keys and values are refused by name."""
import importlib
import os

import ml_collections
import pytest
from absl import flags

from configs import defaults
from ipcgan_jax import configlib
from ipcgan_jax.constants import NUM_AGE_GROUPS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every config file with every argument it documents.
CONFIG_FILES = {
    "g75_conv5.py": ["", "quick", "demo"],
    "g75_ablation.py": ["", "feature_layer=conv3", "age_weight=10", "feature_layer=none,variant=quick",
                        "feature_layer=fc7,age_weight=20,variant=demo"],
    "demo.py": [""],
    "alexnet_identity.py": ["", "quick", "demo"],
    "age_classifier.py": ["", "quick", "demo"],
    "age_evaluator.py": ["", "quick", "demo"],
    "eval.py": [""],
    "utkface.py": ["", "cpu", "quick", "variant=cpu,data_dir=/data/tfds"],
}


def load(spec: str, *overrides: str) -> ml_collections.ConfigDict:
    """As main.py: `--config=configs/<spec>` through config_flags, locked, with overrides."""
    return configlib.load_config_file(os.path.join(ROOT, "configs", spec), *overrides)


def test_every_config_file_is_listed():
    files = {name for name in os.listdir(os.path.join(ROOT, "configs")) if name.endswith(".py")}
    with_get_config = {name for name in files
                       if hasattr(importlib.import_module(f"configs.{name[:-3]}"), "get_config")}
    assert with_get_config == set(CONFIG_FILES)
    assert files - with_get_config == {"__init__.py", "defaults.py"}


@pytest.mark.parametrize("spec", [f"{name}:{arg}" if arg else name
                                  for name, args in CONFIG_FILES.items() for arg in args])
def test_config_file_loads_locked_and_validates(spec):
    config = load(spec)
    assert config.is_locked
    configlib.validate_config(config)


def test_demo_is_the_demo_variant_of_the_paper_config():
    demo = load("demo.py")
    assert demo == load("g75_conv5.py:demo")
    assert demo.num_steps == 1600 and demo.batch_size == 16 and demo.data.image_size == 64
    # The settings that differ from the paper's run at this scale.
    assert demo.data.mixed_age is True
    assert (demo.loss.feature_layer, demo.loss.feature_weight, demo.loss.age_weight, demo.loss.pixel_weight) == (
        "conv1", 2.5e-6, 0.0, 150.0)
    assert demo.model.generator.deconv_impl == "resize_conv" and demo.model.generator.residual_output is True
    assert demo.generator_ema_decay == 0.9
    assert list(demo.pretrain.keys()) == list(configlib.CLASSIFIER_TASKS)


def test_paper_config_values():
    config = load("g75_conv5.py")
    assert (config.num_steps, config.batch_size, config.data.name, config.data.image_size) == (400_000, 32, "cacd", 128)
    assert dict(config.loss) == dict(gan_weight=75.0, feature_weight=0.5e-4, age_weight=30.0, feature_layer="conv5",
                                     pixel_weight=0.0)
    assert dict(config.frozen) == dict(alexnet="../alexnet_identity/export",
                                       age_classifier="../age_classifier/export")
    assert config.data.backend == "tfdata" and config.data.packed_path == ""
    assert len(config.pretrain) == 0 and config.data.mixed_age is False
    # TF1's AdamOptimizer(1e-3, beta1=0.5), networks, BN epsilons and intervals of the original
    assert dict(config.optimizer) == dict(learning_rate=1e-3, b1=0.5, b2=0.999, eps=1e-8, epsilon_placement="tf1")
    assert config.compute_dtype == "float32" and config.generator_ema_decay == 0.0
    g, d = config.model.generator, config.model.discriminator
    assert (g.base_features, g.num_res_blocks, g.bn_epsilon, g.residual_output) == (32, 6, 1e-3, False)
    assert (d.base_features, d.out_features, d.bn_epsilon) == (64, 512, 1e-3)
    assert (config.checkpoint.every, config.sample_every, config.num_sample_faces) == (10_000, 5_000, 32)


def test_small_variants_have_their_sizes():
    quick = load("g75_conv5.py:quick")
    assert (quick.num_steps, quick.batch_size, quick.data.name, quick.data.image_size) == (6, 8, "synthetic", 32)
    assert (quick.model.generator.base_features, quick.model.discriminator.out_features) == (4, 8)
    assert quick.loss.feature_layer == "conv5" and quick.loss.age_weight == 30.0  # the paper's losses
    assert dict(quick.frozen) == dict(alexnet="alexnet_identity/export", age_classifier="age_classifier/export")
    evaluator = load("age_evaluator.py:demo")
    assert (evaluator.num_steps, evaluator.eval_every, evaluator.optimizer.name) == (1200, 1200, "adam")
    assert evaluator.optimizer.schedule == "cosine" and evaluator.class_weighting == "none"
    assert tuple(evaluator.model.evaluator.stage_features) == (16, 32, 64)


# The former ablation files: their argument now, and the fields they changed (every other
# field is the paper's run, or its variant).
FORMER_ABLATIONS = {
    "g75_conv2": ("feature_layer=conv2", {"feature_layer": "conv2", "age_weight": 30.0}),
    "g75_conv3": ("feature_layer=conv3", {"feature_layer": "conv3", "age_weight": 30.0}),
    "g75_conv4": ("feature_layer=conv4", {"feature_layer": "conv4", "age_weight": 30.0}),
    "g75_pool5": ("feature_layer=pool5", {"feature_layer": "pool5", "age_weight": 30.0}),
    "g75_fc6": ("feature_layer=fc6", {"feature_layer": "fc6", "age_weight": 30.0}),
    "g75_fc7": ("feature_layer=fc7", {"feature_layer": "fc7", "age_weight": 30.0}),
    "g75_nofeature": ("feature_layer=none", {"feature_layer": "", "age_weight": 30.0}),
    "g75_conv5_age0": ("age_weight=0", {"feature_layer": "conv5", "age_weight": 0.0}),
    "g75_conv5_age10": ("age_weight=10", {"feature_layer": "conv5", "age_weight": 10.0}),
    "g75_conv5_age20": ("age_weight=20", {"feature_layer": "conv5", "age_weight": 20.0}),
}


@pytest.mark.parametrize("former", sorted(FORMER_ABLATIONS))
def test_ablation_config_reproduces_the_former_files(former):
    arg, changed = FORMER_ABLATIONS[former]
    config = load(f"g75_ablation.py:{arg}")
    assert dict(config.loss) == dict(gan_weight=75.0, feature_weight=0.5e-4, pixel_weight=0.0, **changed)
    paper = load("g75_conv5.py")
    with paper.unlocked():
        paper.loss.update(changed)
    assert config == paper
    # The small variants: the variant's values, then the ablation's.
    demo = load(f"g75_ablation.py:{arg},variant=demo")
    assert demo.loss.feature_weight == 2.5e-6 and demo.data.mixed_age is True and demo.num_steps == 1600
    assert demo.loss.feature_layer == (changed["feature_layer"] if "feature_layer=" in arg else "conv1")
    assert demo.loss.age_weight == (changed["age_weight"] if "age_weight=" in arg else 0.0)
    quick = load(f"g75_ablation.py:{arg},variant=quick")
    assert (quick.num_steps, dict(quick.loss)) == (6, dict(gan_weight=75.0, feature_weight=0.5e-4, pixel_weight=0.0,
                                                         **changed))


@pytest.mark.parametrize("spec, message", [
    ("g75_ablation.py:feature_layr=conv3", "'feature_layr=conv3'"),
    ("g75_ablation.py:age_weight=ten", "'age_weight' must be a float, got 'ten'"),
    ("g75_ablation.py:conv3", "'conv3': expected key=value"),
    ("g75_conv5.py:tiny", "unknown config variant 'tiny'"),
    ("demo.py:quick", "takes no argument"),
    ("eval.py:quick", "takes no argument"),
])
def test_bad_config_argument_is_refused_by_name(spec, message):
    # config_flags reports the config file's ConfigError as a bad --config value.
    with pytest.raises(flags.IllegalFlagValueError, match=f"ConfigError: .*{message}"):
        load(spec)


def test_ablation_with_an_unknown_feature_layer_fails_validation():
    with pytest.raises(configlib.ConfigError, match="'loss.feature_layer'"):
        configlib.validate_config(load("g75_ablation.py:feature_layer=conv9"))


@pytest.mark.parametrize("override, key", [("--config.loss.typo=1", "loss.typo"),
                                           ("--config.num_stepz=1", "num_stepz")])
def test_override_of_an_unknown_key_is_refused_naming_it(override, key):
    argv = ["main.py", "--config=configs/g75_conv5.py:quick", "--workdir=/tmp/w", "--config.seed=3", override]
    with pytest.raises(configlib.ConfigError, match=f"unknown config key '{key}' in {override}"):
        configlib.check_config_flags(argv)
    configlib.check_config_flags(argv[:-1])  # known keys pass
    spaced = ["main.py", "--config", "configs/g75_conv5.py:quick", "--workdir=/tmp/w", override]
    with pytest.raises(configlib.ConfigError, match=f"unknown config key '{key}'"):
        configlib.check_config_flags(spaced)  # --config FILE, as absl also takes it


def test_bad_config_files_are_refused_in_one_line(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n    pass\n")
    for spec, message in ((f"{tmp_path / 'nosuch.py'}", f"no config file at {tmp_path / 'nosuch.py'}"),
                          (f"{broken}", f"{broken} line 1: invalid syntax"),
                          ("configs/g75_conv5.py:nosuch", "unknown config variant 'nosuch'; choose"),
                          ("configs/demo.py:foo", "this config file takes no argument (after ':'), got 'foo'")):
        with pytest.raises(configlib.ConfigError) as error:
            configlib.check_config_flags(["main.py", f"--config={spec}", "--workdir=/tmp/w", "--config.seed=1"])
        message_line = str(error.value)
        assert message_line.startswith(f"--config={spec}: ") and message in message_line
        assert "\n" not in message_line and "Traceback" not in message_line


def test_override_out_of_range_is_refused_naming_the_key():
    config = load("g75_conv5.py:quick", "--config.num_steps=-1")
    assert config.num_steps == -1
    with pytest.raises(configlib.ConfigError, match=r"config key 'num_steps' must be > 0, got -1"):
        configlib.validate_config(config)


def test_negative_pixel_weight_is_refused_naming_the_key():
    with pytest.raises(configlib.ConfigError, match=r"config key 'loss.pixel_weight' must be >= 0, got -1.0"):
        configlib.validate_config(load("g75_conv5.py:quick", "--config.loss.pixel_weight=-1"))
    configlib.validate_config(load("g75_conv5.py:quick", "--config.loss.pixel_weight=100"))


def test_override_in_range_is_kept():
    config = load("g75_conv5.py:quick", "--config.loss.age_weight=5", "--config.data.backend=numpy")
    assert config.loss.age_weight == 5.0 and config.data.backend == "numpy"
    configlib.validate_config(config)


def test_unknown_missing_and_misplaced_keys_are_refused_by_name():
    config = defaults.gan("quick")
    config.loss.gan_wieght = 1.0  # a typo in a config file (unlocked)
    with pytest.raises(configlib.ConfigError, match=r"unknown config key 'loss.gan_wieght' \(did you mean "
                                                    r"'loss.gan_weight'\?\)"):
        configlib.validate_config(config)
    config = defaults.classifier("age_evaluator")
    del config.model.evaluator["blocks_per_stage"]
    with pytest.raises(configlib.ConfigError, match="'model.evaluator.blocks_per_stage' is missing"):
        configlib.validate_config(config)
    config = defaults.gan()
    del config["optimizer"]
    config.optimizer = 0.1
    with pytest.raises(configlib.ConfigError, match="'optimizer' must be a group of settings"):
        configlib.validate_config(config)
    config = defaults.evaluation()
    config.unknown = 1
    with pytest.raises(configlib.ConfigError, match="unknown config key 'unknown'"):
        configlib.validate_config(config)


def test_pretrain_runs_are_validated_as_their_task():
    config = defaults.gan("quick")
    config.pretrain.age_classifier.optimizer.name = "adagrad"
    with pytest.raises(configlib.ConfigError, match=r"in pretrain.age_classifier: config key 'optimizer.name'"):
        configlib.validate_config(config)
    config = defaults.gan("quick")
    config.pretrain.alexnet_identity.task = "gan"
    with pytest.raises(configlib.ConfigError, match="'pretrain.alexnet_identity' must be a classifier run"):
        configlib.validate_config(config)


@pytest.mark.parametrize("config, key", [
    (defaults.gan(), "model.generator.num_groups"),
    (defaults.gan(), "model.discriminator.num_groups"),
    (defaults.gan(), "model.alexnet.num_groups"),
    (defaults.classifier("alexnet_identity"), "model.alexnet.num_groups"),
    (defaults.classifier("age_evaluator"), "model.evaluator.num_groups"),
])
def test_num_groups_is_the_number_of_age_groups(config, key):
    group = config
    *path, last = key.split(".")
    for part in path:
        group = group[part]
    assert group[last] == NUM_AGE_GROUPS
    group[last] = NUM_AGE_GROUPS - 1
    with pytest.raises(configlib.ConfigError, match=f"'{key}' must be {NUM_AGE_GROUPS}"):
        configlib.validate_config(config)


@pytest.mark.parametrize("task", configlib.CLASSIFIER_TASKS + ("gan",))
def test_data_backend_is_tfdata_or_numpy(task):
    config = defaults.gan() if task == "gan" else defaults.classifier(task)
    config.data.update(backend="numpy", packed_path="/data/faces.npz")
    configlib.validate_config(config)
    config.data.backend = "torch"
    with pytest.raises(configlib.ConfigError, match=r"'data.backend' must be 'tfdata' or 'numpy', got 'torch'"):
        configlib.validate_config(config)


def test_eval_values_are_checked_by_name():
    config = load("eval.py", "--config.bn_mode=frozen")
    with pytest.raises(configlib.ConfigError, match="'bn_mode'"):
        configlib.validate_config(config)
    config = load("eval.py", "--config.max_faces=-2")
    with pytest.raises(configlib.ConfigError, match=r"'max_faces' must be >= 0 \(0 = all\)"):
        configlib.validate_config(config)


def test_unknown_task_is_refused():
    config = defaults.gan()
    config.task = "gann"
    with pytest.raises(configlib.ConfigError, match="'task' must be one of"):
        configlib.validate_config(config)
    with pytest.raises(configlib.ConfigError, match="'task' must be one of"):
        defaults.classifier("gan")


def test_main_says_bad_configs_and_missing_data_in_one_line(tmp_path):
    """main.py's own errors end in one line (no traceback) and a non-zero status."""
    import subprocess
    import sys

    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    runs = (
        (["--config=configs/nosuch.py", f"--workdir={tmp_path / 'a'}", "--config.seed=1"],
         "no config file at configs/nosuch.py"),
        (["--config=configs/age_evaluator.py:quick", f"--workdir={tmp_path / 'b'}",
          f"--config.data.packed_path={tmp_path / 'nosuch_pack'}"], "no packed split there"),
    )
    for argv, message in runs:
        result = subprocess.run([sys.executable, "main.py", *argv], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        assert message in result.stderr.strip().splitlines()[-1], result.stderr
