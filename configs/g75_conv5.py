"""IPCGAN as in the paper: G75, conv5 identity features (docs/faithfulness.md §7, §10).

  python main.py --config=configs/g75_conv5.py --workdir=workdirs/g75_conv5

Needs the CACD dataset built with TFDS (README: "Preparing CACD") and the frozen
networks side by side with the workdir: workdirs/alexnet_identity/export and
workdirs/age_classifier/export (configs/alexnet_identity.py, configs/age_classifier.py),
or converted original weights (`python -m ipcgan_jax.convert`, then point
--config.frozen.alexnet / --config.frozen.age_classifier at them).

Expect 400,000 steps of batch 32 (one D then one G update per step), checkpoints every
10k steps, sample grids (32 sources x 5 age groups) every 5k steps in WORKDIR/samples.
The `quick` variant (`configs/g75_conv5.py:quick`) runs the same code on tiny networks
and in-memory synthetic faces in about a minute on a CPU; `:demo` is configs/demo.py.
The values are configs/defaults.py's `gan()`; this file adds where the frozen networks are.
"""
import ml_collections

from configs import defaults, demo


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """variant: '' (the paper's run), 'quick' (tests) or 'demo' (configs/demo.py)."""
    if variant == "demo":
        return demo.get_config()
    config = defaults.gan(variant)
    if not variant:  # the small variants train their own, inside the workdir
        config.frozen.alexnet = "../alexnet_identity/export"
        config.frozen.age_classifier = "../age_classifier/export"
    return config
