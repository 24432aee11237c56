"""The age classifier of IPCGAN's age loss: age_fc6..age_fc8 on the frozen AlexNet trunk.

  python main.py --config=configs/alexnet_identity.py --workdir=workdirs/alexnet_identity
  python main.py --config=configs/age_classifier.py --workdir=workdirs/age_classifier

Needs the identity trunk first: config.frozen.alexnet defaults to
../alexnet_identity/export (resolved against this run's workdir, i.e. the sibling folder
above). Trains only the age head (4096, 4096, 5 groups; dropout 0.5) on pool5 of the
frozen trunk, on CACD's training split with AlexNet input scaling (227x227, minus
[104, 117, 124]), SGD momentum 0.9, learning rate 0.01 with cosine decay, batch 128,
20,000 steps, and reports test-split accuracy, mean absolute error in groups and a
confusion matrix in WORKDIR/report. Writes WORKDIR/export ({"params": age_fc6..age_fc8}),
which configs/g75_conv5.py reads as ../age_classifier/export. Not run here on CACD (no
images in this repository); CACD's ages come from photo years, so expect far below the
synthetic data's accuracy.

Variants: ':quick' (tests) and ':demo' (synthetic faces; 96% test accuracy in the demo run, README).
"""
import ml_collections

from configs import defaults


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """variant: '' (CACD, full size), 'quick' or 'demo' (configs/defaults.py)."""
    return defaults.classifier("age_classifier", variant)
