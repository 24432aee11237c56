"""Config validation and the helpers config files share.

The values live in `configs/` (configs/defaults.py holds every default). `FIELDS` lists,
per task, every key a config may have with the range of its value, so an unknown key
(a typo in a config file or in Python), a missing one or a value out of range stops a
run at its start (`validate_config`) with a message naming the field. The command line
is checked before absl parses it, by `check_config_flags` (main.py): a `--config` file
that is missing, does not compile or refuses its argument, and a typo in a
`--config.<field>` override (named whole, where ml_collections' config_flags names only
its last part), each in one line.
"""
from __future__ import annotations

import difflib
import os
from typing import Any, Callable, NamedTuple, Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from ipcgan_jax.constants import (ALIGNMENT_TEMPLATES, BN_MODES, CONV_IMPLS, DATA_BACKENDS, FEATURE_LAYERS,
                                  GENERATOR_WEIGHTS, NUM_AGE_GROUPS)

TASKS = ("gan", "alexnet_identity", "age_classifier", "age_evaluator", "eval")
CLASSIFIER_TASKS = ("alexnet_identity", "age_classifier", "age_evaluator")
# Keys holding whole run configs, each validated as a config of its own task.
NESTED_RUNS_KEY = "pretrain"


class ConfigError(ValueError):
    """A config has an unknown key or a value out of range."""


class Range(NamedTuple):
    """What a field's value must satisfy; `requirement` completes "config key 'x' ..."."""
    holds: Callable[[Any], bool]
    requirement: str


def one_of(*choices: Any) -> Range:
    return Range(lambda v: v in choices, "must be " + " or ".join(repr(c) for c in choices))


def above(bound: float) -> Range:
    return Range(lambda v: v > bound, f"must be > {bound}")


def at_least(bound: float, note: str = "") -> Range:
    return Range(lambda v: v >= bound, f"must be >= {bound}{note}")


ANY = None  # a field without a range (ConfigDict keeps its type)
POSITIVE = above(0)
NON_NEGATIVE = at_least(0)
FRACTION = Range(lambda v: 0 <= v < 1, "must be in [0, 1)")
AGE_GROUPS = Range(lambda v: v == NUM_AGE_GROUPS,
                   f"must be {NUM_AGE_GROUPS}, the number of age groups (ipcgan_jax.constants.NUM_AGE_GROUPS)")
ALEXNET_SIZE = Range(lambda v: v >= 67, "must be >= 67 (AlexNet needs a 1x1 pool5)")

# ----------------------------------------------------------------------------- fields
_RUN = {
    "task": ANY, "seed": ANY, "num_steps": POSITIVE, "batch_size": POSITIVE,
    "compute_dtype": one_of("float32", "bfloat16"), "log_every": POSITIVE,
    "checkpoint.every": POSITIVE, "checkpoint.keep_last": at_least(1),
    "checkpoint.keep_every": at_least(0, " (0 = off)"), "checkpoint.async_save": ANY,
}
_DATA = {
    **{f"data.{key}": ANY for key in (
        "name", "data_dir", "builder_config", "train_split", "test_split", "packed_path", "mixed_age", "flip",
        "prefetch", "num_identities", "images_per_identity", "size", "seed", "test_fraction")},
    "data.backend": one_of(*DATA_BACKENDS),
    "data.alignment_template": one_of(*ALIGNMENT_TEMPLATES),
    "data.image_size": Range(lambda v: v > 0 and v % 8 == 0, "must be a positive multiple of 8"),
    "data.alexnet_size": ALEXNET_SIZE,
    "data.source_groups": Range(lambda v: len(v) > 0 and all(0 <= g < NUM_AGE_GROUPS for g in v),
                                f"must be a non-empty list of groups in [0, {NUM_AGE_GROUPS})"),
}
_ALEXNET = {
    **{f"model.alexnet.{key}": ANY for key in (
        "conv_features", "fc_features", "bottleneck_features", "num_identities", "age_fc_features")},
    "model.alexnet.num_groups": AGE_GROUPS,
}
_GAN = {
    **_RUN, **_DATA, **_ALEXNET, "conv_impl": one_of(*CONV_IMPLS),
    "model.generator.base_features": ANY, "model.generator.num_res_blocks": ANY,
    "model.generator.num_groups": AGE_GROUPS, "model.generator.bn_epsilon": ANY,
    "model.generator.deconv_impl": one_of("subpixel", "conv_transpose", "resize_conv"),
    "model.generator.residual_output": one_of(False, True),
    "model.discriminator.base_features": ANY, "model.discriminator.out_features": ANY,
    "model.discriminator.num_groups": AGE_GROUPS, "model.discriminator.bn_epsilon": ANY,
    "loss.gan_weight": NON_NEGATIVE, "loss.feature_weight": NON_NEGATIVE, "loss.age_weight": NON_NEGATIVE,
    "loss.pixel_weight": NON_NEGATIVE,
    "loss.feature_layer": Range(lambda v: v in ("",) + FEATURE_LAYERS,
                                f"must be '' (no identity loss) or one of {FEATURE_LAYERS}"),
    "optimizer.learning_rate": POSITIVE, "optimizer.b1": FRACTION, "optimizer.b2": FRACTION,
    "optimizer.eps": POSITIVE, "optimizer.epsilon_placement": one_of("tf1", "optax"),
    "frozen.alexnet": ANY, "frozen.age_classifier": ANY,
    "sample_every": POSITIVE, "num_sample_faces": NON_NEGATIVE, "generator_ema_decay": FRACTION,
    NESTED_RUNS_KEY: Range(lambda v: isinstance(v, ml_collections.ConfigDict), "must be a group of run configs"),
}
_CLASSIFIER = {
    **_RUN, **_DATA,
    "eval_every": POSITIVE, "eval_batch_size": POSITIVE,
    "optimizer.name": one_of("momentum", "adam"), "optimizer.learning_rate": POSITIVE,
    "optimizer.momentum": FRACTION, "optimizer.weight_decay": NON_NEGATIVE,
    "optimizer.schedule": one_of("cosine", "constant"), "optimizer.warmup_steps": NON_NEGATIVE,
}
_ALEXNET_CLASSIFIER = {**_CLASSIFIER, **_ALEXNET, "model.dropout_rate": FRACTION, "conv_impl": one_of(*CONV_IMPLS)}
FIELDS: dict[str, dict[str, Range | None]] = {
    "gan": _GAN,
    "alexnet_identity": {
        **_ALEXNET_CLASSIFIER,
        "optimizer.head_learning_rate_multiplier": POSITIVE, "init.bvlc_npy": ANY,
        "holdout_fraction": Range(lambda v: 0 < v < 1, "must be in (0, 1)"),
        "auxiliary_age_weight": NON_NEGATIVE,
    },
    "age_classifier": {
        **_ALEXNET_CLASSIFIER,
        "frozen.alexnet": Range(bool, "must name the exported identity AlexNet "
                                      "(configs/alexnet_identity.py writes WORKDIR/export)"),
    },
    "age_evaluator": {
        **_CLASSIFIER,
        "model.evaluator.stage_features": Range(lambda v: len(v) > 0 and all(f > 0 for f in v),
                                                "must be a non-empty list of positive widths"),
        "model.evaluator.blocks_per_stage": at_least(1), "model.evaluator.image_size": at_least(8),
        "model.evaluator.num_groups": AGE_GROUPS,
        "class_weighting": one_of("none", "balanced"), "conv_impl": one_of(*CONV_IMPLS),
    },
    "eval": {
        "task": ANY, "step": NON_NEGATIVE, "batch_size": POSITIVE, "max_faces": at_least(0, " (0 = all)"),
        "bn_mode": Range(lambda v: v in ("",) + BN_MODES, f"must be '' or one of {BN_MODES}"),
        "evaluator": ANY, "identity_threshold": POSITIVE, "num_sample_faces": NON_NEGATIVE,
        "generator_weights": one_of(*GENERATOR_WEIGHTS),
        "fid_inception_weights": ANY, "fid_feature_extractor": ANY,  # at most one: _check_fid_sources
        **{f"data.{key}": ANY for key in ("name", "data_dir", "builder_config", "test_split", "packed_path")},
    },
}


def _check_fid_sources(config: ml_collections.ConfigDict) -> None:
    if config.fid_inception_weights and config.fid_feature_extractor:
        raise ConfigError(f"config key 'fid_inception_weights' and 'fid_feature_extractor' are alternatives: "
                          f"set at most one, got {config.fid_inception_weights!r} and "
                          f"{config.fid_feature_extractor!r}")


# ----------------------------------------------------------------------------- validation
def _flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict) and not (prefix == "" and key == NESTED_RUNS_KEY):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_keys(flat: dict[str, Any], fields: dict[str, Range | None]) -> None:
    for key in flat:
        if key in fields:
            continue
        if any(field.startswith(key + ".") for field in fields):
            raise ConfigError(f"config key {key!r} must be a group of settings, got {flat[key]!r}")
        close = difflib.get_close_matches(key, list(fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown config key {key!r}{hint}")
    for field in fields:
        if field not in flat:
            raise ConfigError(f"config key {field!r} is missing (configs/defaults.py has every key)")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first unknown or missing key or out-of-range value."""
    task = config.get("task")
    if task not in TASKS:
        raise ConfigError(f"config key 'task' must be one of {TASKS}, got {task!r}")
    fields = FIELDS[task]
    flat = _flatten(config)
    _check_keys(flat, fields)
    for key, allowed in fields.items():
        try:
            holds = allowed is None or allowed.holds(flat[key])
        except TypeError:  # e.g. a number compared with a string
            holds = False
        if not holds:
            raise ConfigError(f"config key {key!r} {allowed.requirement}, got {flat[key]!r}")
    if task == "eval":
        _check_fid_sources(config)
    for name, run in flat.get(NESTED_RUNS_KEY, {}).items():
        if not isinstance(run, ml_collections.ConfigDict) or run.get("task") not in CLASSIFIER_TASKS:
            raise ConfigError(f"config key '{NESTED_RUNS_KEY}.{name}' must be a classifier run config "
                              f"(task one of {CLASSIFIER_TASKS})")
        try:
            validate_config(run)
        except ConfigError as e:
            raise ConfigError(f"in {NESTED_RUNS_KEY}.{name}: {e}") from None


# ----------------------------------------------------------------------------- command lines
def has_field(config: ml_collections.ConfigDict, key: str) -> bool:
    """Whether the dotted `key` (e.g. 'loss.age_weight') names a field of `config`."""
    node = config
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return False
        node = node[part]
    return True


def load_config_file(spec: str, *overrides: str) -> ml_collections.ConfigDict:
    """The config of `--config=SPEC` (FILE or FILE:ARG) with `--config.<key>=<value>`
    overrides, loaded as main.py loads it (ml_collections' config_flags, locked)."""
    argv = ["config", f"--config={spec}", *overrides]
    flag_values = flags.FlagValues()
    # sys_argv: config_flags looks for overrides there (by default in sys.argv).
    config_flags.DEFINE_config_file("config", None, "config file", flag_values=flag_values, lock_config=True,
                                    sys_argv=argv)
    flag_values(argv)
    return flag_values.config


def check_config_flags(argv: Sequence[str]) -> None:
    """ConfigError, in one line, for a command line whose `--config=SPEC` (or `--config
    SPEC`) names no file, a file that does not compile, or one whose get_config raises
    (e.g. an unknown variant), and for the first `--config.<key>=<value>` whose key the
    config lacks; absl would print a traceback for the first three and a bare KeyError
    naming only the key's last part for the last."""
    specs, overrides = [], []
    for index, arg in enumerate(argv):
        if arg.startswith("--config="):
            specs.append(arg.removeprefix("--config="))
        elif arg == "--config" and index + 1 < len(argv):
            specs.append(argv[index + 1])
        elif arg.startswith("--config."):
            overrides.append(arg)
    if len(specs) != 1:
        return  # none, or several: absl's parsing refuses the command line itself
    spec = specs[0]
    path = spec.split(":", 1)[0]
    if not os.path.isfile(path):
        raise ConfigError(f"--config={spec}: no config file at {path}")
    try:
        config = load_config_file(spec)
    except SyntaxError as error:
        raise ConfigError(f"--config={spec}: {error.filename} line {error.lineno}: {error.msg}") from None
    except flags.Error as error:  # get_config raised: its own message, without the traceback around it
        cause = error
        while cause.__cause__ or cause.__context__:
            cause = cause.__cause__ or cause.__context__
        raise ConfigError(f"--config={spec}: {cause if isinstance(cause, ConfigError) else repr(cause)}") from None
    for arg in overrides:
        key = arg.partition("=")[0].removeprefix("--config.")
        if not has_field(config, key):
            raise ConfigError(f"unknown config key {key!r} in {arg}")


# ----------------------------------------------------------------------------- config files
def parse_arg(arg: str, **types: type) -> dict[str, Any]:
    """The settings in a config file's argument, `key=value,key=value` (what follows ':' in
    `--config=FILE:ARG`), each converted by its type in `types`; ConfigError names an
    unknown key or a value its type does not take. Keys not given are left out."""
    if arg and not types:
        raise ConfigError(f"this config file takes no argument (after ':'), got {arg!r}")
    settings = {}
    for item in filter(None, arg.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise ConfigError(f"config argument {item!r}: expected key=value with a key in {sorted(types)}")
        try:
            settings[key] = types[key](value)
        except ValueError:
            raise ConfigError(f"config argument {key!r} must be a {types[key].__name__}, got {value!r}") from None
    return settings
