"""The independent age evaluator: grades generated faces, never trained against.

  python main.py --config=configs/age_evaluator.py --workdir=workdirs/age_evaluator

A small ResNet (ipcgan_jax.models.AgeEvaluator: stages of 32, 64, 128, 256 features, two
residual blocks each, batch norm) on 128x128 faces scaled to [-1, 1], with its own seed:
another architecture, input scaling and initialisation than the AlexNet age classifier
the GAN is trained against, so a generator that fools that classifier does not grade
itself. CACD training split, random flips, SGD momentum 0.9, learning rate 0.1 with cosine
decay, weight decay 5e-4, batch 128, 30,000 steps. Reports test-split accuracy, mean
absolute error in groups and a confusion matrix in WORKDIR/report, and writes
WORKDIR/export with its architecture in the metadata
(`ipcgan_jax.age_evaluator.load_age_evaluator`). Not run here on CACD (no images in this
repository).

Variants: ':quick' (tests) and ':demo' (synthetic faces).
"""
import ml_collections

from configs import defaults


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """variant: '' (CACD, full size), 'quick' or 'demo' (configs/defaults.py)."""
    return defaults.classifier("age_evaluator", variant)
