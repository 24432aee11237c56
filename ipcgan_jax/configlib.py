"""Default configurations and validation.

Every config file in `configs/` starts from one of the defaults here and overrides
fields, so a typo in a key or an out-of-range value is caught at start
(`validate_config`) with a message naming the field.
"""
from __future__ import annotations

import difflib
from typing import Any, Callable

import ml_collections

from ipcgan_jax.models import FEATURE_LAYERS

TASKS = ("gan", "alexnet_identity", "age_classifier", "age_evaluator", "eval")


class ConfigError(ValueError):
    """A config has an unknown key or a value out of range."""


def data_defaults() -> ml_collections.ConfigDict:
    """Where faces come from (see ipcgan_jax.data.sources.load_faces)."""
    return ml_collections.ConfigDict(dict(
        name="cacd",               # 'cacd' | 'image_folder' | 'synthetic_aging' (TFDS) | 'synthetic' (in memory)
        data_dir="",               # TFDS data_dir holding the built dataset ('' = TFDS default)
        builder_config="",         # TFDS builder config name ('' = the builder's default)
        train_split="train",
        test_split="test",
        image_size=128,            # G and D resolution
        alexnet_size=227,          # AlexNet input resolution
        source_groups=(0,),        # SPEC §6: sources only from group 0 (11-20)
        mixed_age=False,           # variant: per-example target groups instead of one per batch
        flip=False,                # variant: random horizontal flips
        prefetch=2,
        # In-memory synthetic faces (name='synthetic').
        num_identities=200,
        images_per_identity=10,
        size=128,
        seed=0,
        test_fraction=0.1,
    ))


def alexnet_defaults() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        conv_features=(96, 256, 384, 384, 256), fc_features=4096, bottleneck_features=256,
        num_identities=2000, age_fc_features=4096, num_groups=5))


def checkpoint_defaults(every: int, keep_every: int) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(every=every, keep_last=3, keep_every=keep_every,
                                          async_save=True))


def gan_defaults() -> ml_collections.ConfigDict:
    """The paper's run: G75 with conv5 identity features (SPEC §5-6)."""
    c = ml_collections.ConfigDict()
    c.task = "gan"
    c.seed = 0
    c.num_steps = 400_000
    c.batch_size = 32
    c.compute_dtype = "float32"
    c.data = data_defaults()
    c.model = ml_collections.ConfigDict(dict(
        # deconv_impl: how G's transposed convs are computed, the same function either way:
        # 'subpixel' (faster on CPU) or 'conv_transpose' (lax.conv_transpose)
        generator=dict(base_features=32, num_res_blocks=6, num_groups=5, bn_epsilon=1e-3,
                       deconv_impl="subpixel"),
        discriminator=dict(base_features=64, out_features=512, num_groups=5, bn_epsilon=1e-3),
        alexnet=alexnet_defaults(),
    ))
    c.loss = ml_collections.ConfigDict(dict(gan_weight=75.0, feature_weight=0.5e-4,
                                            age_weight=30.0, feature_layer="conv5"))
    c.optimizer = ml_collections.ConfigDict(dict(learning_rate=1e-3, b1=0.5, b2=0.999, eps=1e-8,
                                                 epsilon_placement="tf1"))
    # Frozen networks: directories written by the alexnet_identity / age_classifier runs
    # (WORKDIR/export) or by `python -m ipcgan_jax.convert`.
    c.frozen = ml_collections.ConfigDict(dict(alexnet="", age_classifier=""))
    # Auxiliary runs to do first when their export is missing (the demo trains its own).
    c.pretrain = ml_collections.ConfigDict()
    c.checkpoint = checkpoint_defaults(every=10_000, keep_every=50_000)
    c.log_every = 100
    c.sample_every = 5_000
    c.num_sample_faces = 32
    return c


CLASSIFIER_TASKS = ("alexnet_identity", "age_classifier", "age_evaluator")


def evaluator_defaults() -> ml_collections.ConfigDict:
    """The age evaluator's architecture (ipcgan_jax.models.AgeEvaluator)."""
    return ml_collections.ConfigDict(dict(stage_features=(32, 64, 128, 256), blocks_per_stage=2,
                                          num_groups=5, image_size=128))


def classifier_defaults(task: str) -> ml_collections.ConfigDict:
    """The auxiliary networks on CACD (ipcgan_jax.classifiers): 'alexnet_identity',
    'age_classifier' or 'age_evaluator'. Each task has its own seed."""
    if task not in CLASSIFIER_TASKS:
        raise ConfigError(f"config key 'task' must be one of {CLASSIFIER_TASKS}, got {task!r}")
    c = ml_collections.ConfigDict()
    c.task = task
    c.seed = {"alexnet_identity": 1, "age_classifier": 2, "age_evaluator": 3}[task]
    c.num_steps = {"alexnet_identity": 60_000, "age_classifier": 20_000, "age_evaluator": 30_000}[task]
    c.batch_size = 128
    c.compute_dtype = "float32"
    c.data = data_defaults()
    c.data.flip = True
    if task == "age_evaluator":
        c.model = ml_collections.ConfigDict(dict(evaluator=evaluator_defaults()))
    else:
        # Dropout on fc6/fc7 (identity) or age_fc6/age_fc7 (age) while training only, as
        # in Caffe's AlexNet; the frozen networks in the GAN run without it.
        c.model = ml_collections.ConfigDict(dict(alexnet=alexnet_defaults(), dropout_rate=0.5))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="momentum",             # 'momentum' (SGD, momentum 0.9) | 'adam' (AdamW)
        learning_rate=0.1 if task == "age_evaluator" else 0.01,
        momentum=0.9,
        weight_decay=5e-4,           # on kernels only
        schedule="cosine",           # 'cosine' (to 0 at num_steps) | 'constant'
        warmup_steps=1000,
    ))
    if task == "alexnet_identity":
        # The new layers (new_1, new_2) learn this many times faster than the rest, the
        # usual way to fine-tune from ImageNet weights.
        c.optimizer.head_learning_rate_multiplier = 10.0
        c.init = ml_collections.ConfigDict(dict(bvlc_npy=""))  # ImageNet AlexNet to start from
        # Identity accuracy needs faces of identities seen in training: this fraction of
        # every training identity's images is held out as the test set.
        c.holdout_fraction = 0.1
        # Weight of an auxiliary age-group loss trained with the trunk (its age head is
        # not exported). 0 is the original identity-only fine-tuning of an ImageNet trunk;
        # the synthetic demo, with no ImageNet start and identities that by construction
        # carry no age, needs it for the trunk to keep age features (SPEC §4: the age
        # head is trained on this frozen trunk).
        c.auxiliary_age_weight = 0.0
    if task == "age_classifier":
        c.frozen = ml_collections.ConfigDict(dict(alexnet="../alexnet_identity/export"))
    c.checkpoint = checkpoint_defaults(every=5_000, keep_every=0)
    c.log_every = 100
    c.eval_every = 5_000
    c.eval_batch_size = 256
    return c


_DEFAULTS: dict[str, Callable[[], ml_collections.ConfigDict]] = {
    "gan": gan_defaults,
    **{task: (lambda task=task: classifier_defaults(task)) for task in CLASSIFIER_TASKS},
}


def _check_keys(config: Any, reference: Any, path: str, free_keys: set[str]) -> None:
    for key in config.keys():
        full = f"{path}{key}"
        if key not in reference:
            close = difflib.get_close_matches(key, list(reference.keys()), n=1)
            hint = f" (did you mean {path + close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown config key {full!r}{hint}")
        value, ref_value = config[key], reference[key]
        if full in free_keys:
            continue
        if isinstance(ref_value, ml_collections.ConfigDict) and not isinstance(value, ml_collections.ConfigDict):
            raise ConfigError(f"config key {full!r} must be a group of settings, got {value!r}")
        if isinstance(value, ml_collections.ConfigDict) and isinstance(ref_value, ml_collections.ConfigDict):
            _check_keys(value, ref_value, full + ".", free_keys)


def _require(condition: bool, key: str, message: str, value: Any) -> None:
    if not condition:
        raise ConfigError(f"config key {key!r} {message}, got {value!r}")


def _check_gan_values(c: ml_collections.ConfigDict) -> None:
    _require(c.num_steps > 0, "num_steps", "must be > 0", c.num_steps)
    _require(c.batch_size > 0, "batch_size", "must be > 0", c.batch_size)
    _require(c.compute_dtype in ("float32", "bfloat16"), "compute_dtype", "must be 'float32' or 'bfloat16'", c.compute_dtype)
    deconv_impl = c.model.generator.get("deconv_impl", "subpixel")
    _require(deconv_impl in ("subpixel", "conv_transpose"), "model.generator.deconv_impl",
             "must be 'subpixel' or 'conv_transpose'", deconv_impl)
    _require(c.data.image_size > 0 and c.data.image_size % 8 == 0, "data.image_size",
             "must be a positive multiple of 8", c.data.image_size)
    _require(c.data.alexnet_size >= 67, "data.alexnet_size", "must be >= 67 (AlexNet needs a 1x1 pool5)", c.data.alexnet_size)
    groups = c.model.generator.num_groups
    _require(all(0 <= g < groups for g in c.data.source_groups) and len(c.data.source_groups) > 0,
             "data.source_groups", f"must be a non-empty list of groups in [0, {groups})", c.data.source_groups)
    _require(groups == c.model.discriminator.num_groups == c.model.alexnet.num_groups,
             "model.generator.num_groups", "must equal model.discriminator.num_groups and model.alexnet.num_groups", groups)
    _require(groups >= 2, "model.generator.num_groups", "must be >= 2", groups)
    for key in ("gan_weight", "feature_weight", "age_weight"):
        _require(c.loss[key] >= 0, f"loss.{key}", "must be >= 0", c.loss[key])
    _require(c.loss.feature_layer in ("",) + FEATURE_LAYERS, "loss.feature_layer",
             f"must be '' (no identity loss) or one of {FEATURE_LAYERS}", c.loss.feature_layer)
    _require(c.optimizer.learning_rate > 0, "optimizer.learning_rate", "must be > 0", c.optimizer.learning_rate)
    for key in ("b1", "b2"):
        _require(0 <= c.optimizer[key] < 1, f"optimizer.{key}", "must be in [0, 1)", c.optimizer[key])
    _require(c.optimizer.eps > 0, "optimizer.eps", "must be > 0", c.optimizer.eps)
    _require(c.optimizer.epsilon_placement in ("tf1", "optax"), "optimizer.epsilon_placement",
             "must be 'tf1' or 'optax'", c.optimizer.epsilon_placement)
    _check_checkpoint_and_logging(c)
    _require(c.num_sample_faces >= 0, "num_sample_faces", "must be >= 0", c.num_sample_faces)


def _check_checkpoint_and_logging(c: ml_collections.ConfigDict) -> None:
    _require(c.checkpoint.every > 0, "checkpoint.every", "must be > 0", c.checkpoint.every)
    _require(c.checkpoint.keep_last >= 1, "checkpoint.keep_last", "must be >= 1", c.checkpoint.keep_last)
    _require(c.checkpoint.keep_every >= 0, "checkpoint.keep_every", "must be >= 0 (0 = off)", c.checkpoint.keep_every)
    _require(c.log_every > 0, "log_every", "must be > 0", c.log_every)
    if "sample_every" in c:
        _require(c.sample_every > 0, "sample_every", "must be > 0", c.sample_every)


def _check_classifier_values(c: ml_collections.ConfigDict) -> None:
    _require(c.num_steps > 0, "num_steps", "must be > 0", c.num_steps)
    _require(c.batch_size > 0, "batch_size", "must be > 0", c.batch_size)
    _require(c.eval_batch_size > 0, "eval_batch_size", "must be > 0", c.eval_batch_size)
    _require(c.eval_every > 0, "eval_every", "must be > 0", c.eval_every)
    _require(c.compute_dtype in ("float32", "bfloat16"), "compute_dtype", "must be 'float32' or 'bfloat16'", c.compute_dtype)
    if c.task == "age_evaluator":
        e = c.model.evaluator
        _require(len(e.stage_features) > 0 and all(f > 0 for f in e.stage_features),
                 "model.evaluator.stage_features", "must be a non-empty list of positive widths", e.stage_features)
        _require(e.blocks_per_stage >= 1, "model.evaluator.blocks_per_stage", "must be >= 1", e.blocks_per_stage)
        _require(e.image_size >= 8, "model.evaluator.image_size", "must be >= 8", e.image_size)
        _require(e.num_groups >= 2, "model.evaluator.num_groups", "must be >= 2", e.num_groups)
    else:
        _require(c.data.alexnet_size >= 67, "data.alexnet_size", "must be >= 67 (AlexNet needs a 1x1 pool5)", c.data.alexnet_size)
        _require(0 <= c.model.dropout_rate < 1, "model.dropout_rate", "must be in [0, 1)", c.model.dropout_rate)
        _require(c.model.alexnet.num_groups >= 2, "model.alexnet.num_groups", "must be >= 2", c.model.alexnet.num_groups)
    o = c.optimizer
    _require(o.name in ("momentum", "adam"), "optimizer.name", "must be 'momentum' or 'adam'", o.name)
    _require(o.learning_rate > 0, "optimizer.learning_rate", "must be > 0", o.learning_rate)
    _require(0 <= o.momentum < 1, "optimizer.momentum", "must be in [0, 1)", o.momentum)
    _require(o.weight_decay >= 0, "optimizer.weight_decay", "must be >= 0", o.weight_decay)
    _require(o.schedule in ("cosine", "constant"), "optimizer.schedule", "must be 'cosine' or 'constant'", o.schedule)
    _require(o.warmup_steps >= 0, "optimizer.warmup_steps", "must be >= 0", o.warmup_steps)
    if c.task == "alexnet_identity":
        _require(c.auxiliary_age_weight >= 0, "auxiliary_age_weight", "must be >= 0", c.auxiliary_age_weight)
        _require(o.head_learning_rate_multiplier > 0, "optimizer.head_learning_rate_multiplier", "must be > 0",
                 o.head_learning_rate_multiplier)
        _require(0 < c.holdout_fraction < 1, "holdout_fraction", "must be in (0, 1)", c.holdout_fraction)
    if c.task == "age_classifier":
        _require(bool(c.frozen.alexnet), "frozen.alexnet",
                 "must name the exported identity AlexNet (configs/alexnet_identity.py writes WORKDIR/export)",
                 c.frozen.alexnet)
    _check_checkpoint_and_logging(c)


def _eval_defaults() -> ml_collections.ConfigDict:
    from ipcgan_jax import evaluation  # imports this module: resolved at call time

    return evaluation.eval_defaults()


def _check_eval_values(c: ml_collections.ConfigDict) -> None:
    from ipcgan_jax import evaluation

    evaluation.check_eval_config(c)


_DEFAULTS["eval"] = _eval_defaults
_VALUE_CHECKS: dict[str, Callable[[ml_collections.ConfigDict], None]] = {
    "gan": _check_gan_values, "eval": _check_eval_values,
    **{task: _check_classifier_values for task in CLASSIFIER_TASKS}}


# Keys whose contents are free-form (nested run configs).
_FREE_KEYS = {"pretrain"}


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first unknown key or out-of-range value."""
    task = config.get("task")
    if task not in TASKS:
        raise ConfigError(f"config key 'task' must be one of {TASKS}, got {task!r}")
    if task not in _DEFAULTS:
        raise ConfigError(f"no defaults registered for task {task!r}")
    _check_keys(config, _DEFAULTS[task](), "", _FREE_KEYS)
    if task in _VALUE_CHECKS:
        _VALUE_CHECKS[task](config)
    for name, sub in config.get("pretrain", {}).items():
        try:
            validate_config(sub)
        except ConfigError as e:
            raise ConfigError(f"in pretrain.{name}: {e}") from None


# ----------------------------------------------------------------------------- variants
# Every config has smaller variants that run the same code: 'quick' (tests, about a
# minute on a CPU) and 'demo' (the embedded default: visible aging on a 2-core CPU in
# under 15 minutes). Both use the in-memory synthetic faces and train their own small
# frozen networks first (config.pretrain).
_SIZES = {
    "quick": dict(image_size=32, alexnet_size=67, g_features=4, res_blocks=2, d_features=4,
                  d_out=8, alexnet=dict(conv_features=(8, 8, 8, 8, 8), fc_features=16,
                                        bottleneck_features=8, age_fc_features=16),
                  identities=20, images_per_identity=10, data_size=48),
    "demo": dict(image_size=64, alexnet_size=115, g_features=8, res_blocks=6, d_features=16,
                 d_out=32, alexnet=dict(conv_features=(32, 64, 96, 96, 64), fc_features=256,
                                        bottleneck_features=64, age_fc_features=256),
                 identities=250, images_per_identity=20, data_size=64),
}


def shrink_data(data: ml_collections.ConfigDict, variant: str) -> None:
    """In-memory synthetic faces at the variant's size."""
    s = _SIZES[variant]
    data.name = "synthetic"
    data.image_size = s["image_size"]
    data.alexnet_size = s["alexnet_size"]
    data.num_identities = s["identities"]
    data.images_per_identity = s["images_per_identity"]
    data.size = s["data_size"]
    data.test_fraction = 0.2


def shrink_alexnet(alexnet: ml_collections.ConfigDict, variant: str, num_identities: int) -> None:
    alexnet.update(_SIZES[variant]["alexnet"])
    alexnet.num_identities = num_identities


def apply_variant(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
    """'' returns `config` unchanged; 'quick' and 'demo' shrink it (see `_SIZES`)."""
    if not variant:
        return config
    if variant not in _SIZES:
        raise ConfigError(f"unknown config variant {variant!r}; choose '', 'quick' or 'demo'")
    if config.task in CLASSIFIER_TASKS:
        return _apply_classifier_variant(config, variant)
    if config.task != "gan":
        raise ConfigError(f"no variants defined for task {config.task!r}")
    s = _SIZES[variant]
    shrink_data(config.data, variant)
    g, d = config.model.generator, config.model.discriminator
    g.base_features, g.num_res_blocks = s["g_features"], s["res_blocks"]
    d.base_features, d.out_features = s["d_features"], s["d_out"]
    shrink_alexnet(config.model.alexnet, variant, num_identities=s["identities"])
    if variant == "quick":
        config.num_steps, config.batch_size = 6, 8
        config.checkpoint.every, config.log_every, config.sample_every = 3, 1, 3
        config.num_sample_faces = 4
    else:
        config.num_steps, config.batch_size = 1200, 16
        config.checkpoint.every, config.log_every, config.sample_every = 200, 20, 200
        config.num_sample_faces = 8
        # Three settings differ from the paper's run, each because of a measured failure at
        # this scale (README, "What the demo does"):
        # - One target group per batch (faithful) hides the condition from G: its one-hot
        #   maps are constant over the batch and the BN after G's first conv subtracts them,
        #   except where zero padding breaks the constancy. The paper's 400k steps learn
        #   through that; 1,200 did not (generated age accuracy stayed at chance, 0.28).
        #   Mixed groups per batch (a named variant) let G and D see it at once.
        config.data.mixed_age = True
        # - The demo trunk learns few of its 200 identities in its CPU budget (identity
        #   accuracy 2.8%, chance 0.5%), so its conv5 carries age more than identity: for
        #   group-0 faces conv5 moves 2.5x further (squared distance 9,456 vs 3,828) when
        #   the same face is aged to 51+ than when another face is drawn, so a conv5
        #   identity loss fights the ageing. conv1 keeps the face's layout and colours,
        #   so the identity term anchors G to its input.
        config.loss.feature_layer = "conv1"
        config.loss.feature_weight = 2e-5
        # - The small age classifier's gradients are noisy: at the paper's 30 they tore the
        #   faces into stripes while D was still learning the condition.
        config.loss.age_weight = 15.0
    config.checkpoint.keep_every = 0
    # The small variants train their own frozen networks first, inside the GAN workdir
    # (relative frozen paths are resolved against it), in this order: the age classifier
    # needs the identity trunk (so the keys must not be sorted).
    config.pretrain = ml_collections.ConfigDict(
        {task: apply_variant(classifier_defaults(task), variant) for task in CLASSIFIER_TASKS},
        sort_keys=False)
    config.frozen.alexnet = "alexnet_identity/export"
    config.frozen.age_classifier = "age_classifier/export"
    return config


# Training settings of the classifier tasks in the small variants (AdamW, constant
# learning rate unless a schedule is named). The demo's were tuned on a 2-core CPU; the
# age classifier's test accuracy on the synthetic faces is set by the trunk, not the head
# (3,000 head steps on a 600-step trunk: 98% train, 93.6% test). Measured (age head 600
# steps): trunk 600 steps constant 92.1%, 600 cosine 89.8%, 800 cosine 94.6%, 1,000
# cosine 96.1%; the decay is what lets the trunk's age loss fall (0.31 -> 0.09).
_CLASSIFIER_RUNS = {
    "quick": {
        "alexnet_identity": dict(num_steps=8, batch_size=8, learning_rate=1e-3),
        "age_classifier": dict(num_steps=8, batch_size=8, learning_rate=1e-3),
        "age_evaluator": dict(num_steps=8, batch_size=8, learning_rate=1e-3),
    },
    "demo": {
        "alexnet_identity": dict(num_steps=1000, batch_size=16, learning_rate=1e-3, schedule="cosine"),
        "age_classifier": dict(num_steps=600, batch_size=32, learning_rate=1e-3),
        "age_evaluator": dict(num_steps=400, batch_size=32, learning_rate=1e-3),
    },
}
_EVALUATOR_SIZES = {
    "quick": dict(stage_features=(4, 8), blocks_per_stage=1, image_size=32),
    "demo": dict(stage_features=(16, 32, 64), blocks_per_stage=1, image_size=64),
}


def _apply_classifier_variant(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
    """The classifier tasks on the same in-memory synthetic faces and network sizes as the
    GAN variant of the same name, trained with AdamW at a constant learning rate."""
    s = _SIZES[variant]
    shrink_data(config.data, variant)
    if config.task == "age_evaluator":
        config.model.evaluator.update(_EVALUATOR_SIZES[variant])
    else:
        shrink_alexnet(config.model.alexnet, variant, num_identities=s["identities"])
    run = _CLASSIFIER_RUNS[variant][config.task]
    config.num_steps, config.batch_size = run["num_steps"], run["batch_size"]
    config.optimizer.update(name="adam", learning_rate=run["learning_rate"], weight_decay=0.0,
                            schedule=run.get("schedule", "constant"), warmup_steps=0)
    if config.task != "age_evaluator":
        config.model.dropout_rate = 0.0  # runs this short underfit; dropout only slows them
    if config.task == "alexnet_identity":
        config.optimizer.head_learning_rate_multiplier = 1.0  # from scratch: no new layers
        # The synthetic identities carry no age, so without this term the trunk would
        # have no age features for the age head (which sits on the frozen trunk).
        config.auxiliary_age_weight = 3.0
    if variant == "quick":
        config.checkpoint.every, config.log_every, config.eval_every = 4, 1, 4
        config.eval_batch_size = 16
    else:
        # A save costs about 2 s of these minutes-long runs on two cores.
        config.checkpoint.every, config.log_every = 200, 20
        config.eval_every = config.num_steps
        config.eval_batch_size = 64
    config.checkpoint.keep_every = 0
    return config
