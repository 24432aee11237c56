"""Small configs and random inputs shared by the training tests."""
from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ipcgan_jax import gan
from ipcgan_jax.constants import CAFFE_MEAN_BGR


BENCHMARKS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@functools.cache
def benchmark_module(name: str):
    """The script benchmarks/<name>.py as a module (once per test process); its directory
    goes on sys.path first, for the scripts' own sibling imports (json_report)."""
    if BENCHMARKS_DIR not in sys.path:
        sys.path.insert(0, BENCHMARKS_DIR)
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS_DIR, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config_file(name: str, arg: str = "") -> ml_collections.ConfigDict:
    """The config of `--config=configs/<name>.py:<arg>`, as its get_config returns it."""
    return importlib.import_module(f"configs.{name}").get_config(arg)


def tiny_gan_config() -> ml_collections.ConfigDict:
    """The faithful GAN config (configs/g75_conv5.py) shrunk to run a step in well under a
    second on a CPU; no frozen networks (the tests make their own)."""
    c = config_file("g75_conv5")
    c.frozen.update(alexnet="", age_classifier="")
    c.num_steps = 4
    c.batch_size = 8
    c.data.name = "synthetic"
    c.data.image_size = 32
    c.data.alexnet_size = 67
    c.data.num_identities = 12
    c.data.images_per_identity = 10
    c.data.size = 48
    c.data.test_fraction = 0.25
    c.model.generator.base_features = 4
    c.model.generator.num_res_blocks = 2
    c.model.discriminator.base_features = 4
    c.model.discriminator.out_features = 8
    c.model.alexnet.update(conv_features=(8, 8, 8, 8, 8), fc_features=16, bottleneck_features=8,
                           num_identities=12, age_fc_features=16)
    c.checkpoint.every = 2
    c.checkpoint.async_save = True
    c.log_every = 1
    c.sample_every = 2
    c.num_sample_faces = 3
    return c


def assert_resumes_only_at_default(config: ml_collections.ConfigDict, workdir: str, key: str,
                                   other_value) -> None:
    """A run recorded before config field `key` (dotted) existed, its config.json lacking it,
    resumes under the field's value in `config` (the one that reproduces it) and is refused,
    naming the field, under `other_value`."""
    from ipcgan_jax.configlib import ConfigError
    from ipcgan_jax.runlib import workdir as workdir_lib

    *parents, leaf = key.split(".")

    def parent(tree):
        for part in parents:
            tree = tree[part]
        return tree

    workdir_lib.prepare_workdir(config, workdir)
    # It saved a checkpoint (and so did the nested run the key configures): its config binds.
    nested = key.split(".")[1] if key.startswith("pretrain.") else ""
    os.makedirs(os.path.join(workdir, nested, "checkpoints", "1"))
    path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
    with open(path) as f:
        recorded = json.load(f)
    del parent(recorded)[leaf]  # as written before the field existed
    with open(path, "w") as f:
        json.dump(recorded, f)
    workdir_lib.prepare_workdir(config, workdir)
    parent(config)[leaf] = other_value
    with pytest.raises(ConfigError, match=leaf):
        workdir_lib.prepare_workdir(config, workdir)


def random_alexnet_params(config: ml_collections.ConfigDict, seed: int = 1):
    size = config.data.alexnet_size
    # compiled: op by op, the grouped convs' init took seconds
    variables = jax.jit(gan.build_alexnet(config).init)(jax.random.key(seed), jnp.zeros((1, size, size, 3)))
    # Scaled down: random AlexNet weights on 0..255 inputs give activations (and losses)
    # many orders above those of a trained network.
    return jax.tree.map(lambda x: x * 0.25, variables["params"])


def random_batch(config: ml_collections.ConfigDict, seed: int, *, target: int = 2, false: int = 4):
    rng = np.random.default_rng(seed)
    n, s, a = config.batch_size, config.data.image_size, config.data.alexnet_size
    mean = np.asarray(CAFFE_MEAN_BGR, np.float32)
    return {
        "source_d": (rng.uniform(0, 255, (n, s, s, 3)) - mean).astype(np.float32),
        "source_g": (rng.uniform(0, 255, (n, s, s, 3)) - mean).astype(np.float32),
        "source_g_alexnet": (rng.uniform(0, 255, (n, a, a, 3)) - mean).astype(np.float32),
        "real": rng.uniform(-1, 1, (n, s, s, 3)).astype(np.float32),
        "target_group": np.full((n,), target, np.int32),
        "false_group": np.full((n,), false, np.int32),
    }
