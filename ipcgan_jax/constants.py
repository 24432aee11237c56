"""Constants of the IPCGAN setting, defined once for the whole package.

Plain Python values only (no jax, numpy or TensorFlow import), so every layer of the
package, the data code included, can import this module.
"""
from __future__ import annotations

# The Caffe ImageNet mean in Caffe's BGR channel order (B 104, G 117, R 124). The original
# code subtracts it from RGB images channel by channel without reordering, i.e. 104 from
# R and 124 from B; the pretrained networks were trained on inputs scaled that way, so
# every input path here does the same (docs/faithfulness.md §8).
CAFFE_MEAN_BGR = (104.0, 117.0, 124.0)

# Age groups (docs/faithfulness.md §2): the inclusive upper age of every group but the
# last, open-ended one, and the youngest age of the first group. `data.age_groups` maps ages with these;
# its `age_group_labels()` of them is AGE_GROUP_LABELS (tested).
AGE_GROUP_UPPER_AGES = (20, 30, 40, 50)
MIN_AGE = 11
AGE_GROUP_LABELS = ("11-20", "21-30", "31-40", "41-50", "51+")
# The oldest age a dataset's labels may give (UTKFace's oldest face is 116): an older one
# is a labelling error, and the builders skip and report the image.
MAX_LABELLED_AGE = 120
NUM_AGE_GROUPS = len(AGE_GROUP_LABELS)

# Continuous ages (ipcgan_jax.continuous_age.age_condition): each group's centre in years, the
# midpoint of its ten years (15.5 ... 45.5); the open-ended last group is given the same
# width (51-60: 55.5). A requested age between two centres blends those two groups'
# condition maps linearly; below the first centre or above the last one it is that
# group's one-hot condition. Requests outside MIN_AGE..MAX_REQUESTED_AGE are refused.
_GROUP_WIDTH = AGE_GROUP_UPPER_AGES[-1] - AGE_GROUP_UPPER_AGES[-2]
_GROUP_LOWER_AGES = (MIN_AGE,) + tuple(upper + 1 for upper in AGE_GROUP_UPPER_AGES)
_GROUP_UPPER_AGES_CLOSED = AGE_GROUP_UPPER_AGES + (AGE_GROUP_UPPER_AGES[-1] + _GROUP_WIDTH,)
AGE_GROUP_CENTRES = tuple((lower + upper) / 2 for lower, upper in zip(_GROUP_LOWER_AGES, _GROUP_UPPER_AGES_CLOSED))
MAX_REQUESTED_AGE = 120

# AlexNet parameter names (models.AlexNet) by part: the conv trunk; the identity head on
# pool5 (fc6 and fc7 as in Caffe, new_1 and new_2 added for the CACD identities); the age
# head trained on the frozen trunk.
ALEXNET_TRUNK_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
ALEXNET_IDENTITY_HEAD_LAYERS = ("fc6", "fc7", "new_1", "new_2")
ALEXNET_IDENTITY_LAYERS = ALEXNET_TRUNK_LAYERS + ALEXNET_IDENTITY_HEAD_LAYERS
ALEXNET_AGE_HEAD_LAYERS = ("age_fc6", "age_fc7", "age_fc8")
# The layers `bvlc_alexnet.npy` (ImageNet AlexNet) provides; its fc8 is ImageNet's classes.
BVLC_ALEXNET_LAYERS = ALEXNET_TRUNK_LAYERS + ("fc6", "fc7")
# AlexNet activations the identity feature loss may use (docs/faithfulness.md §7; config
# loss.feature_layer).
FEATURE_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7")

# How the generator's BatchNorms run at inference (ipcgan_jax.inference; config bn_mode):
# 'moving' averages everywhere, or 'single', the original's residual BNs on the one image's
# own statistics.
BN_MODES = ("moving", "single")
# How the networks' convolutions run (models.layers.conv_function): XLA's conv, im2col +
# dot, 'auto' (im2col on a CPU backend, XLA's conv elsewhere), 'xla_per_group' (XLA's
# conv, a grouped conv as one ungrouped conv per group: the form of AlexNet's TF port), or
# 'onednn' (oneDNN's conv on a CPU backend, XLA's conv elsewhere: models.onednn).
CONV_IMPLS = ("xla", "im2col", "auto", "xla_per_group", "onednn")

# Input pipelines of the trainers (config data.backend): tf.data, or numpy without TensorFlow.
DATA_BACKENDS = ("tfdata", "numpy")

# Named face framings of the aligner (ipcgan_jax.data.face_templates; config
# data.alignment_template): the CACD crops', and UTKFace's chips'.
ALIGNMENT_TEMPLATES = ("cacd", "utkface")

# Grid artefacts of the generator's upsampling (ipcgan_jax.artefacts): G doubles the
# resolution twice, so a pattern a stride-2 layer stamps repeats every 2 output pixels
# (the last layer) or every 4 (the first). Both are periodic with this period, whose
# frequencies (multiples of size / 4 on each axis) contain those of period 2.
UPSAMPLING_GRID_PERIOD = 4

# Config fields added after runs were recorded, with the value that reproduces those runs:
# a recorded config without the key resumes (runlib.workdir) and is read under that value.
FIELDS_ADDED_LATER = {"model.generator.residual_output": False, "class_weighting": "none", "conv_impl": "xla",
                      "pretrain.age_evaluator.class_weighting": "none", "pretrain.age_evaluator.conv_impl": "xla",
                      "loss.pixel_weight": 0.0,
                      "generator_ema_decay": 0.0}

# Where a run that trains its own age evaluator (the demo, configs/utkface.py: the nested
# run `pretrain.age_evaluator`) exports it, relative to the workdir: the evaluation's
# default `evaluator`. Missing there, the age metrics are skipped; any other path the
# user gives must exist.
EVALUATOR_IN_WORKDIR = "age_evaluator/export"

# Which of a GAN run's generator weights to read (inference.load_generator): the moving
# average kept by the variant generator_ema_decay, or the weights the last step left.
GENERATOR_WEIGHTS = ("average", "live")
