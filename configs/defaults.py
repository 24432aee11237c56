"""The default values of every task; each config file starts from one and shows what it changes.

Full size (variant ''): the CACD runs of the paper (docs/faithfulness.md §6-§10). The
small variants run the same code on the in-memory synthetic faces and train their own
small frozen networks first: 'quick' (tests, about a minute on a CPU) and 'demo' (the
embedded default, visible aging on a 2-core CPU in under 15 minutes). Their sizes are the
tables under "Small variants" below. `ipcgan_jax.configlib.validate_config` checks the ranges.
"""
from __future__ import annotations

import ml_collections

from ipcgan_jax.configlib import CLASSIFIER_TASKS, ConfigError
from ipcgan_jax.constants import EVALUATOR_IN_WORKDIR, NUM_AGE_GROUPS
from ipcgan_jax.identity import VERIFICATION_THRESHOLD

VARIANTS = ("", "quick", "demo")


def data() -> ml_collections.ConfigDict:
    """Where faces come from (see ipcgan_jax.data.sources.load_faces)."""
    return ml_collections.ConfigDict(dict(
        name="cacd",               # 'cacd' | 'image_folder' | 'synthetic_aging' (TFDS) | 'synthetic' (in memory)
        data_dir="",               # TFDS data_dir holding the built dataset ('' = TFDS default)
        builder_config="",         # TFDS builder config name ('' = the builder's default)
        train_split="train",
        test_split="test",
        backend="tfdata",          # input pipeline: 'tfdata' | 'numpy' (TensorFlow-free)
        packed_path="",            # faces packed by `python -m ipcgan_jax.data.pack`, read instead of TFDS ('' = none)
        alignment_template="cacd",  # the faces' framing, which the photo tool reproduces: 'cacd' | 'utkface'
        image_size=128,            # G and D resolution
        alexnet_size=227,          # AlexNet input resolution
        source_groups=(0,),        # sources only from group 0, 11-20 (docs/faithfulness.md §10)
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


def alexnet() -> ml_collections.ConfigDict:
    """AlexNet (ipcgan_jax.models.AlexNet) with its identity and age heads."""
    return ml_collections.ConfigDict(dict(
        conv_features=(96, 256, 384, 384, 256), fc_features=4096, bottleneck_features=256,
        num_identities=2000, age_fc_features=4096, num_groups=NUM_AGE_GROUPS))


def age_evaluator_model() -> ml_collections.ConfigDict:
    """The age evaluator's architecture (ipcgan_jax.models.AgeEvaluator)."""
    return ml_collections.ConfigDict(dict(stage_features=(32, 64, 128, 256), blocks_per_stage=2,
                                          num_groups=NUM_AGE_GROUPS, image_size=128))


def checkpoint(every: int, keep_every: int) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(every=every, keep_last=3, keep_every=keep_every, async_save=True))


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ConfigError(f"unknown config variant {variant!r}; choose '', 'quick' or 'demo'")


# ----------------------------------------------------------------------------- GAN
def gan(variant: str = "") -> ml_collections.ConfigDict:
    """The paper's run: G75 with conv5 identity features (docs/faithfulness.md §7-§10), or a
    small variant."""
    check_variant(variant)
    c = ml_collections.ConfigDict()
    c.task = "gan"
    c.seed = 0
    c.num_steps = 400_000
    c.batch_size = 32
    c.compute_dtype = "float32"
    # How the convs run (models.layers.conv_function): 'onednn' (oneDNN, PyTorch's CPU conv
    # library, on a CPU; XLA's conv on accelerators), 'xla', 'im2col' (patches + one dot),
    # 'auto' (im2col on a CPU) or 'xla_per_group': the same functions up to float rounding.
    # On this 2-core CPU 'onednn' ran the paper's step as fast as PyTorch, 1.3x faster than
    # 'auto' (benchmarks/README.md); of the small variants below, 'quick' keeps XLA's conv.
    c.conv_impl = "onednn"
    c.data = data()
    c.model = ml_collections.ConfigDict(dict(
        # deconv_impl: how G's transposed convs are computed, the same function either way:
        # 'subpixel' (faster on CPU) or 'conv_transpose' (lax.conv_transpose); or the
        # variant 'resize_conv' (nearest upsampling + conv: no checkerboard, models/layers.py)
        # residual_output: a variant (models.Generator) where G adds its output to the source
        # before the tanh and starts as the identity map; the original is False.
        generator=dict(base_features=32, num_res_blocks=6, num_groups=NUM_AGE_GROUPS, bn_epsilon=1e-3,
                       deconv_impl="subpixel", residual_output=False),
        discriminator=dict(base_features=64, out_features=512, num_groups=NUM_AGE_GROUPS, bn_epsilon=1e-3),
        alexnet=alexnet(),
    ))
    # pixel_weight: a variant (the original has none), an L1 term between G's output and
    # its source (losses.pixel_loss).
    c.loss = ml_collections.ConfigDict(dict(gan_weight=75.0, feature_weight=0.5e-4,
                                            age_weight=30.0, feature_layer="conv5", pixel_weight=0.0))
    c.optimizer = ml_collections.ConfigDict(dict(learning_rate=1e-3, b1=0.5, b2=0.999, eps=1e-8,
                                                 epsilon_placement="tf1"))
    # A variant (the original has none): keep an exponential moving average of G's weights,
    # ema <- decay * ema + (1 - decay) * weights after every G update; sample sheets,
    # evaluation and export then use it (gan.sampling_variables). 0 = off.
    c.generator_ema_decay = 0.0
    # Frozen networks: directories written by the alexnet_identity / age_classifier runs
    # (WORKDIR/export) or by `python -m ipcgan_jax.convert`.
    c.frozen = ml_collections.ConfigDict(dict(alexnet="", age_classifier=""))
    # Auxiliary runs to do first when their export is missing (the small variants train their own).
    c.pretrain = ml_collections.ConfigDict()
    c.checkpoint = checkpoint(every=10_000, keep_every=50_000)
    c.log_every = 100
    c.sample_every = 5_000
    c.num_sample_faces = 32
    if variant:
        c.update(SMALL_GAN[variant])
        c.data.update(SMALL_DATA[variant])
        c.model.alexnet.update(SMALL_ALEXNET[variant])
        # The small variants train their own frozen networks first, inside the GAN workdir
        # (relative frozen paths are resolved against it), in this order: the age classifier
        # needs the identity trunk (so the keys must not be sorted).
        c.pretrain = ml_collections.ConfigDict(
            {task: classifier(task, variant) for task in CLASSIFIER_TASKS}, sort_keys=False)
        c.frozen.update(alexnet="alexnet_identity/export", age_classifier="age_classifier/export")
    return c


# ----------------------------------------------------------------------------- classifiers
def classifier(task: str, variant: str = "") -> ml_collections.ConfigDict:
    """The auxiliary networks on CACD (ipcgan_jax.classifiers): 'alexnet_identity',
    'age_classifier' or 'age_evaluator', or a small variant of one. Each task has its own seed."""
    if task not in CLASSIFIER_TASKS:
        raise ConfigError(f"config key 'task' must be one of {CLASSIFIER_TASKS}, got {task!r}")
    check_variant(variant)
    c = ml_collections.ConfigDict()
    c.task = task
    c.seed = {"alexnet_identity": 1, "age_classifier": 2, "age_evaluator": 3}[task]
    c.num_steps = {"alexnet_identity": 60_000, "age_classifier": 20_000, "age_evaluator": 30_000}[task]
    c.batch_size = 128
    c.compute_dtype = "float32"
    c.data = data()
    c.data.flip = True
    if task == "age_evaluator":
        c.model = ml_collections.ConfigDict(dict(evaluator=age_evaluator_model()))
        # 'none' | 'balanced' (a variant for imbalanced data): each training image's loss
        # weighted by N / (K n_g) for the n_g of the N training faces in its group g of K, so
        # every group weighs the same (classifiers.tasks.balanced_class_weights).
        c.class_weighting = "none"
    else:
        # Dropout on fc6/fc7 (identity) or age_fc6/age_fc7 (age) while training only, as
        # in Caffe's AlexNet; the frozen networks in the GAN run without it.
        c.model = ml_collections.ConfigDict(dict(alexnet=alexnet(), dropout_rate=0.5))
    # How the network's convs run (models.layers.conv_function; for AlexNet, its grouped convs
    # conv2, conv4, conv5): the same function whichever, up to float summation order.
    c.conv_impl = "xla"
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
        # the synthetic faces, with no ImageNet start and identities that by construction
        # carry no age, need it for the trunk to keep age features (the age head is trained
        # on this frozen trunk: docs/faithfulness.md §6).
        c.auxiliary_age_weight = 0.0
    if task == "age_classifier":
        c.frozen = ml_collections.ConfigDict(dict(alexnet="../alexnet_identity/export"))
    c.checkpoint = checkpoint(every=5_000, keep_every=0)
    c.log_every = 100
    c.eval_every = 5_000
    c.eval_batch_size = 256
    if variant:
        # The same synthetic faces and network sizes as the GAN variant of the same name,
        # trained with AdamW at a constant learning rate unless a schedule is named.
        run = SMALL_CLASSIFIER_RUNS[variant][task]
        c.update(SMALL_CLASSIFIER_LOGGING[variant])
        c.data.update(SMALL_DATA[variant])
        c.num_steps, c.batch_size = run["num_steps"], run["batch_size"]
        if variant == "demo":
            c.eval_every = c.num_steps  # once, at the end
        c.optimizer.update(name="adam", learning_rate=1e-3, weight_decay=0.0, warmup_steps=0,
                           schedule=run.get("schedule", "constant"))
        if task == "age_evaluator":
            c.model.evaluator.update(SMALL_AGE_EVALUATOR[variant])
        else:
            c.model.alexnet.update(SMALL_ALEXNET[variant])
            c.model.dropout_rate = 0.0  # runs this short underfit; dropout only slows them
        if variant == "demo":
            # Time the first command's 15-minute budget does not have (benchmarks/README.md,
            # "The demo's budget"). oneDNN's convs (the same functions up to float summation
            # order) ran the age head's and the evaluator's training steps faster than XLA's
            # conv on a 2-core CPU; neither network reaches G's loss (the demo's age weight
            # is 0), so the GAN trains as before. The trunk, whose conv1 features are G's
            # identity target, keeps AlexNet's grouped convs one group at a time (2.8x
            # faster than XLA's grouped conv): under oneDNN its step ran 1.7x faster but
            # elsewhere (conv1 features 0.6x the scale), away from the loss weights tuned
            # on it.
            c.conv_impl = "xla_per_group" if task == "alexnet_identity" else "onednn"
        if task == "alexnet_identity":
            c.optimizer.head_learning_rate_multiplier = 1.0  # from scratch: no new layers
            # The synthetic identities carry no age, so without this term the trunk would
            # have no age features for the age head (which sits on the frozen trunk).
            c.auxiliary_age_weight = 3.0
    return c


# ----------------------------------------------------------------------------- evaluation
def evaluation() -> ml_collections.ConfigDict:
    """Settings of task 'eval' (configs/eval.py, ipcgan_jax.evaluation)."""
    c = ml_collections.ConfigDict()
    c.task = "eval"
    c.step = 0                    # checkpoint step to evaluate; 0 = the latest
    c.batch_size = 16             # source faces per batch (each pair still runs on its own)
    c.max_faces = 0               # evaluate only the first N source faces; 0 = all
    c.bn_mode = ""                # '' = inference default ('moving'); or 'moving' | 'single'
    # G's weights, for a run that kept their moving average (generator_ema_decay): 'average'
    # (as its sample sheets and export) or 'live' (the weights the last step left).
    c.generator_weights = "average"
    c.evaluator = EVALUATOR_IN_WORKDIR   # exported age evaluator, relative to the workdir
    c.identity_threshold = VERIFICATION_THRESHOLD
    # FID features: pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or .npz), relative to the
    # workdir; or, instead, an extractor 'package.module:factory' (ipcgan_jax.fid). Both '' = skip FID.
    c.fid_inception_weights = ""
    c.fid_feature_extractor = ""
    c.num_sample_faces = 8
    # Override the run's data settings ('' = as recorded in WORKDIR/config.json).
    # packed_path reads the test faces from a pack (e.g. a run trained from a pack made
    # elsewhere, evaluated on the full-resolution test split packed here).
    c.data = ml_collections.ConfigDict(dict(name="", data_dir="", builder_config="", test_split="", packed_path=""))
    return c


# ----------------------------------------------------------------------------- small variants
# The in-memory synthetic faces, shared by the GAN and its frozen networks.
SMALL_DATA = {
    "quick": dict(name="synthetic", image_size=32, alexnet_size=67, num_identities=20, images_per_identity=10,
                  size=48, test_fraction=0.2),
    "demo": dict(name="synthetic", image_size=64, alexnet_size=115, num_identities=250, images_per_identity=20,
                 size=64, test_fraction=0.2),
}
SMALL_ALEXNET = {
    "quick": dict(conv_features=(8, 8, 8, 8, 8), fc_features=16, bottleneck_features=8, age_fc_features=16,
                  num_identities=20),
    "demo": dict(conv_features=(32, 64, 96, 96, 64), fc_features=256, bottleneck_features=64,
                 age_fc_features=256, num_identities=250),
}
SMALL_AGE_EVALUATOR = {
    "quick": dict(stage_features=(4, 8), blocks_per_stage=1, image_size=32),
    "demo": dict(stage_features=(16, 32, 64), blocks_per_stage=1, image_size=64),
}
# conv_impl: 'xla' for 'quick' (tiny networks: compile time dominates); 'onednn' for the
# demo, whose step took 308 ms with it against 360 ms with XLA's conv (one process,
# alternating; 294 ms with XLA's conv and 359 ms with im2col in an earlier comparison).
SMALL_GAN = {
    "quick": dict(num_steps=6, batch_size=8, log_every=1, sample_every=3, num_sample_faces=4, conv_impl="xla",
                  checkpoint=dict(every=3, keep_every=0),
                  model=dict(generator=dict(base_features=4, num_res_blocks=2),
                             discriminator=dict(base_features=4, out_features=8))),
    "demo": dict(num_steps=1600, batch_size=16, log_every=20, sample_every=200, num_sample_faces=8, conv_impl="onednn",
                 checkpoint=dict(every=200, keep_every=0),
                 model=dict(generator=dict(base_features=8, num_res_blocks=6),
                            discriminator=dict(base_features=16, out_features=32))),
}


# Training of the classifier tasks in the small variants. The demo's were tuned on a
# 2-core CPU; the age classifier's test accuracy on the synthetic faces is set by the
# trunk, not the head (3,000 head steps on a 600-step trunk: 98% train, 93.6% test).
# Measured (age head 600 steps): trunk 600 steps constant 92.1%, 600 cosine 89.8%, 800
# cosine 94.6%, 1,000 cosine 96.1%; the decay is what lets the trunk's age loss fall
# (0.31 -> 0.09). (With XLA's grouped conv; the trunk trained one group at a time, as the
# demo's is now, gives 95.2%.)
SMALL_CLASSIFIER_RUNS = {
    "quick": {
        "alexnet_identity": dict(num_steps=8, batch_size=8),
        "age_classifier": dict(num_steps=8, batch_size=8),
        "age_evaluator": dict(num_steps=8, batch_size=8),
    },
    "demo": {
        "alexnet_identity": dict(num_steps=1000, batch_size=16, schedule="cosine"),
        "age_classifier": dict(num_steps=600, batch_size=32),
        # The evaluator sets the ceiling the GAN's outputs are read against, so it must tell
        # every group apart. 400 steps at a constant rate left it underfit (train accuracy
        # 82%, test 72.9%; real faces recognised 0.91 / 0.98 / 0.955 / 0.26 / 0.54 per group,
        # 41-50 mostly called 31-40 and 51+ spread over 21-50), although the synthetic groups
        # are evenly spaced (data/synthetic.py AGE_ATTRIBUTES). 800 cosine: 89.0%, 0.995 /
        # 0.97 / 0.88 / 0.68 / 0.925; 1,200 cosine: 95.6%, 1.0 / 0.98 / 0.93 / 0.90 / 0.97
        # (seed 4: 95.4%, lowest group 0.895), in 3.7-4.7 minutes instead of 3.3 on the
        # shared 2-core CPU (upper bounds).
        "age_evaluator": dict(num_steps=1200, batch_size=32, schedule="cosine"),
    },
}
SMALL_CLASSIFIER_LOGGING = {
    "quick": dict(log_every=1, eval_every=4, eval_batch_size=16, checkpoint=dict(every=4, keep_every=0)),
    # A save costs about 2 s of these minutes-long runs on two cores.
    "demo": dict(log_every=20, eval_batch_size=64, checkpoint=dict(every=200, keep_every=0)),
}
