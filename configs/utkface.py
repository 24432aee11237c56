"""IPCGAN on real faces: UTKFace (ages, genders and races; no identities).

  # once: build the dataset (2-3 min), see docs/real_faces.md
  python -m ipcgan_jax.data.build image_folder --config=utkface \
      --manual_dir=/data/utkface_dev,/data/utkface_more --data_dir=workdirs/tfds
  python main.py --config=configs/utkface.py:cpu --workdir=workdirs/utkface_cpu     # this 2-core CPU
  python main.py --config=configs/utkface.py --workdir=workdirs/utkface               # GPU, paper sizes
  python main.py --config=configs/eval.py --workdir=workdirs/utkface_cpu              # evaluate

Arguments (after ':', comma-separated, all optional): a variant ('cpu' or 'quick', alone or
as variant=...) and data_dir=DIR (the TFDS folder of the built dataset, default
workdirs/tfds). Like the demo, every variant first trains its own frozen networks into
WORKDIR/alexnet_identity, WORKDIR/age_classifier and WORKDIR/age_evaluator, then the GAN.

The paper's recipe (configs/g75_conv5.py) with these changes, each for a reason measured
on these faces (docs/real_faces.md):
- data: the 'utkface' build of the folder builder, chips kept in their own framing, which
  the photo tool reproduces (data.alignment_template='utkface').
- identity trunk: UTKFace has no identities; the AlexNet trunk learns the 10 gender x race
  classes in place of identities, with its auxiliary age head (weight 1). Of the candidates
  measured, its conv5 features separate a face from others best and agree best with dlib
  (ROC AUC 0.935 and Spearman 0.24 at conv5, against 0.900 / 0.12 for a random trunk and
  0.926 / 0.07 for the synthetic-identity trunk; seed 0, docs/real_faces.md).
- sources 11-30 (groups 0 and 1), not 11-20 only: UTKFace has 1,223 training faces of
  11-20 but 6,736 of 21-30.
- G's residual output (model.generator.residual_output): G starts as the identity map and
  learns the change of age, so identity survives a run of minutes.
- G upsamples by resize-convolution (model.generator.deconv_impl='resize_conv'): with the
  original's 3x3 stride-2 transposed convs, the residual G's first 500 steps on these
  faces drew a 4-pixel checkerboard over every face (docs/real_faces.md).
- mixed target groups per batch and age weight 15, as the demo (configs/demo.py).

`:cpu` runs the same at 64 px with the demo's narrow networks in under an hour on a
2-core CPU (README, "Real faces"); `:quick` is a test-sized run.
"""
import ml_collections

from configs import defaults, demo
from ipcgan_jax import configlib

DATA_DIR = "workdirs/tfds"
GENDER_RACE_CLASSES = 10  # the 'identities' of the utkface build (ipcgan_jax/data/image_folder.py)
VARIANT_SIZES = {"cpu": "demo", "quick": "quick"}  # the small tables of configs/defaults.py they use

# Step budgets: `:cpu` was timed on the 2-core CPU (README); `:quick` is for tests.
CPU_STEPS = {"alexnet_identity": 1500, "age_classifier": 800, "age_evaluator": 800, "gan": 2000}
QUICK_STEPS = {"alexnet_identity": 4, "age_classifier": 4, "age_evaluator": 4, "gan": 4}


def utkface_data(data: ml_collections.ConfigDict, data_dir: str, flip: bool) -> None:
    data.update(name="image_folder", builder_config="utkface", data_dir=data_dir, alignment_template="utkface",
                flip=flip)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg in VARIANT_SIZES:
        arg = f"variant={arg}"
    settings = configlib.parse_arg(arg, variant=str, data_dir=str)
    variant, data_dir = settings.get("variant", ""), settings.get("data_dir", DATA_DIR)
    if variant not in ("",) + tuple(VARIANT_SIZES):
        raise configlib.ConfigError(f"unknown variant {variant!r} of configs/utkface.py; choose '', 'cpu' or 'quick'")
    size = VARIANT_SIZES.get(variant, "")
    steps = {"cpu": CPU_STEPS, "quick": QUICK_STEPS}.get(variant)
    config = defaults.gan(size)
    utkface_data(config.data, data_dir, flip=False)  # faithful: no flips in the GAN
    config.data.source_groups = (0, 1)
    config.data.mixed_age = True
    config.model.generator.residual_output = True
    config.model.generator.deconv_impl = "resize_conv"
    config.model.alexnet.num_identities = GENDER_RACE_CLASSES
    config.loss.age_weight = demo.get_config().loss.age_weight
    if not size:
        # Full size: the frozen networks are trained first, into the workdir, at the
        # paper's sizes (from scratch: no ImageNet weights here).
        config.pretrain = ml_collections.ConfigDict(
            {task: defaults.classifier(task) for task in configlib.CLASSIFIER_TASKS}, sort_keys=False)
        config.frozen.update(alexnet="alexnet_identity/export", age_classifier="age_classifier/export")
    else:
        # The identity loss at conv5 keeps the paper's weight per feature: the demo's
        # trunk (115 px input, 64 conv5 maps) has 2,304 conv5 features, the paper's
        # 43,264, so the weight scales by their ratio.
        config.loss.feature_weight = round(0.5e-4 * 43_264 / 2_304, 6)
        config.num_steps = steps["gan"]
        if variant == "cpu":
            config.checkpoint.every, config.sample_every = 500, 500
    for task, sub in config.pretrain.items():
        utkface_data(sub.data, data_dir, flip=True)
        if steps:
            sub.num_steps = steps[task]
            if variant == "cpu":
                sub.batch_size = 32
                sub.optimizer.schedule = "cosine"
                sub.eval_every = sub.num_steps
        if "alexnet" in sub.model:
            sub.model.alexnet.num_identities = GENDER_RACE_CLASSES
        if task == "alexnet_identity":
            sub.auxiliary_age_weight = 1.0
    return config
