"""IPCGAN on real faces: UTKFace (ages, genders and races; no identities).

  # once: build the dataset (2-3 min), see docs/real_faces.md
  python -m ipcgan_jax.data.build image_folder --config=utkface \
      --manual_dir=/data/utkface_dev,/data/utkface_more --data_dir=workdirs/tfds
  python main.py --config=configs/utkface.py:cpu --workdir=workdirs/utkface_cpu     # this 2-core CPU
  python main.py --config=configs/utkface.py --workdir=workdirs/utkface               # GPU, paper sizes
  python main.py --config=configs/utkface.py:h200 --workdir=workdirs/utkface_h200     # one short GPU lease
  python main.py --config=configs/eval.py --workdir=workdirs/utkface_cpu              # evaluate

Arguments (after ':', comma-separated, all optional): a variant ('cpu', 'h200' or 'quick',
alone or as variant=...) and data_dir=DIR (the TFDS folder of the built dataset, default
workdirs/tfds) or packed=DIR (faces packed by `python -m ipcgan_jax.data.pack`, read
without TensorFlow by the numpy input backend, for the GAN and every frozen network). Like the demo, every variant first trains its own frozen networks into
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
- mixed target groups per batch, as the demo (configs/demo.py).
- the identity term weighs 10 times the paper's (IDENTITY_WEIGHT_FACTOR) and the age term
  10 (AGE_WEIGHT; paper 30): the gender x race trunk holds a face less firmly than an
  identity trunk, and with the weights the demo then used (age 15) dlib verified under
  half of the 41-50 / 51+ outputs.
- the age evaluator (which only grades, never trains G) weighs every age group the same in
  its loss (class_weighting='balanced'): UTKFace's groups are unbalanced, and unweighted it
  called almost every real face 21-30 or 51+ (the measurements at CPU_EVALUATOR_STAGES).

`:cpu` runs the same at 64 px with the demo's narrow networks in under an hour on a
2-core CPU (README, "Real faces"); `:quick` is a test-sized run. `:h200` is the full-size
recipe with the frozen networks' step budgets cut to fit, with the GAN, one 15-minute
lease of one H200 (launch/gpu_check.sh, README "GPU"): the GAN keeps the paper's 400,000
steps and the lease stops it early with SIGTERM (a checkpoint; the same command resumes).
"""
import ml_collections

from configs import defaults
from ipcgan_jax import configlib

DATA_DIR = "workdirs/tfds"
GENDER_RACE_CLASSES = 10  # the 'identities' of the utkface build (ipcgan_jax/data/image_folder.py)
VARIANT_SIZES = {"cpu": "demo", "quick": "quick", "h200": ""}  # the small tables of configs/defaults.py they use

# Step budgets: `:cpu` was timed on the 2-core CPU (README); `:quick` is for tests.
CPU_STEPS = {"alexnet_identity": 1500, "age_classifier": 800, "age_evaluator": 2000, "gan": 2000}
QUICK_STEPS = {"alexnet_identity": 4, "age_classifier": 4, "age_evaluator": 4, "gan": 4}
# `:h200`: step budgets estimated, not yet measured on the GPU, to leave most of a 15-minute
# lease to the GAN: the numpy input backend made a 227-px batch of 128 in 245 ms on 2
# cores here (about 30 ms on the H200 machine's 16, if it scales), so about 2 minutes for
# all three. At the pack's 9,443 training faces (launch/gpu_check.sh) they are 14-20
# epochs. The GAN's steps are the paper's: the lease's deadline stops it.
H200_STEPS = {"alexnet_identity": 1500, "age_classifier": 1000, "age_evaluator": 1500}
H200_GAN_EVERY = 1000  # checkpoints and sample sheets (steps)
# The `:cpu` age evaluator sets the ceiling the GAN's outputs are read against (the
# evaluator's mean estimated group on real test faces of each group), so it must spread its
# estimates over all five groups. Measured on the 1,899 test faces (per group 11-20 / 21-30
# / 31-40 / 41-50 / 51+; minutes on the shared 2-core CPU, upper bounds):
#   demo's 3 stages, 800 steps, unweighted: accuracy 49.0%, per group 0.00 / 0.89 / 0.02 /
#     0.00 / 0.60, mean estimated group 1.57 / 1.32 / 1.72 / 2.29 / 2.81 (3.4 min)
#   3 stages, 2,000 steps, unweighted: 55.2%, 0.00 / 0.89 / 0.09 / 0.00 / 0.80,
#     1.35 / 1.25 / 1.73 / 2.65 / 3.44 (10.8 min)
#   3 stages, 2,000 steps, balanced: 46.7%, 0.55 / 0.52 / 0.17 / 0.27 / 0.72,
#     0.76 / 1.35 / 1.95 / 2.75 / 3.35 (9.6 min)
#   4 stages (a 128-feature stage at 4x4), balanced, 1,600 steps: 49.0%, 0.55 / 0.47 /
#     0.32 / 0.41 / 0.70, 0.69 / 1.33 / 1.94 / 2.78 / 3.46 (7.0 min)
#   the same, 2,000 steps: 50.6%, 0.57 / 0.50 / 0.34 / 0.37 / 0.72, 0.70 / 1.26 / 1.90 /
#     2.84 / 3.49 (12.2 min at a higher load; CPU time 2.5x the first row's)
# The identity term's weight over the paper's, and the age term's weight. The trunk
# learned gender x race, not identities, so its conv5 distances hold a face less firmly
# than CACD's identity trunk. `:cpu`, seed 0, the same frozen networks, 2,000 GAN steps,
# configs/eval.py on 300 held-out faces (dlib verification for 11-20 ... 51+; the
# evaluator's mean estimated group minus that of real faces of the group; docs/real_faces.md):
#   paper's identity weight, age 15 (the demo's): verification 0.96 / 1.00 / 0.96 / 0.47 /
#     0.45, colour blotches and moustaches on women in the old groups
#   identity x10, age 15: 0.94 / 1.00 / 1.00 / 0.95 / 0.85, but 31-40 and 41-50 over-aged
#     (+0.80, +0.75 groups) under horizontal stripes (grid ratio 2.9 overall)
#   identity x10, age 10: 0.97 / 1.00 / 1.00 / 0.99 / 0.96, every group within 0.37 of real
#     faces, grid ratio 1.6 (real faces 1.1); seed 1: 0.99-1.00, grid 1.1, but 41-50 and
#     51+ under-aged (-0.63, -1.07 groups)
#   age 5 alone (paper's identity weight) drew dark blotches by step 1,000.
# Measured at `:cpu` only; the full-size run uses the same weights.
IDENTITY_WEIGHT_FACTOR = 10.0
AGE_WEIGHT = 10.0
EVALUATOR_CLASS_WEIGHTING = "balanced"  # every variant: all read UTKFace's unbalanced groups
CPU_EVALUATOR_STAGES = (16, 32, 64, 128)


def utkface_data(data: ml_collections.ConfigDict, data_dir: str, packed: str, flip: bool) -> None:
    data.update(name="image_folder", builder_config="utkface", data_dir=data_dir, alignment_template="utkface",
                flip=flip)
    if packed:
        data.update(packed_path=packed, backend="numpy")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg in VARIANT_SIZES:
        arg = f"variant={arg}"
    settings = configlib.parse_arg(arg, variant=str, data_dir=str, packed=str)
    variant, data_dir = settings.get("variant", ""), settings.get("data_dir", DATA_DIR)
    packed = settings.get("packed", "")
    if variant not in ("",) + tuple(VARIANT_SIZES):
        raise configlib.ConfigError(
            f"unknown variant {variant!r} of configs/utkface.py; choose '', 'cpu', 'h200' or 'quick'")
    size = VARIANT_SIZES.get(variant, "")
    steps = {"cpu": CPU_STEPS, "quick": QUICK_STEPS, "h200": H200_STEPS}.get(variant)
    config = defaults.gan(size)
    utkface_data(config.data, data_dir, packed, flip=False)  # faithful: no flips in the GAN
    config.data.source_groups = (0, 1)
    config.data.mixed_age = True
    config.model.generator.residual_output = True
    config.model.generator.deconv_impl = "resize_conv"
    config.model.alexnet.num_identities = GENDER_RACE_CLASSES
    config.loss.age_weight = AGE_WEIGHT
    if not size:
        # Full size: the frozen networks are trained first, into the workdir, at the
        # paper's sizes (from scratch: no ImageNet weights here).
        config.pretrain = ml_collections.ConfigDict(
            {task: defaults.classifier(task) for task in configlib.CLASSIFIER_TASKS}, sort_keys=False)
        config.frozen.update(alexnet="alexnet_identity/export", age_classifier="age_classifier/export")
        config.loss.feature_weight *= IDENTITY_WEIGHT_FACTOR
        if variant == "h200":
            config.checkpoint.every = config.sample_every = H200_GAN_EVERY
    else:
        # The identity loss at conv5 keeps the full-size weight per feature: the demo's
        # trunk (115 px input, 64 conv5 maps) has 2,304 conv5 features, the paper's
        # 43,264, so the weight scales by their ratio.
        config.loss.feature_weight = round(config.loss.feature_weight * IDENTITY_WEIGHT_FACTOR * 43_264 / 2_304, 5)
        config.num_steps = steps["gan"]
        if variant == "cpu":
            config.checkpoint.every, config.sample_every = 500, 500
            # The shipped model (ipcgan_jax/pretrained/utkface_cpu) was trained with XLA's
            # conv; the demo's table has since moved to oneDNN's, the same function.
            config.conv_impl = "xla"
    for task, sub in config.pretrain.items():
        utkface_data(sub.data, data_dir, packed, flip=True)
        if steps:
            sub.num_steps = steps[task]
            sub.eval_every = sub.num_steps
            if variant == "cpu":
                sub.batch_size = 32
                sub.optimizer.schedule = "cosine"
        if "alexnet" in sub.model:
            sub.model.alexnet.num_identities = GENDER_RACE_CLASSES
        if task == "alexnet_identity":
            sub.auxiliary_age_weight = 1.0
        if task == "age_evaluator":
            sub.class_weighting = EVALUATOR_CLASS_WEIGHTING
            if variant == "cpu":
                sub.model.evaluator.stage_features = CPU_EVALUATOR_STAGES
    return config
