"""Ablations of the paper's run (configs/g75_conv5.py): the identity-feature layer and the
age-loss weight, set by the config's argument.

  python main.py --config=configs/g75_ablation.py:feature_layer=conv3 --workdir=workdirs/g75_conv3
  python main.py --config=configs/g75_ablation.py:age_weight=10 --workdir=workdirs/g75_conv5_age10
  python main.py --config=configs/g75_ablation.py:feature_layer=none --workdir=workdirs/g75_nofeature
  python main.py --config=configs/g75_ablation.py:feature_layer=fc7,variant=quick --workdir=/tmp/fc7_quick

Arguments (comma-separated key=value, all optional; unset = as in configs/g75_conv5.py):
- feature_layer: conv1 ... conv5, pool5, fc6, fc7, or none (no identity feature loss).
  The feature weight stays 0.5e-4 as in the original code; the feature sum scales with
  the layer's size, so the effective weight differs by layer. Expect outputs that drift
  from the input identity without it.
- age_weight: the age loss weight (paper: 30). Expect weaker aging as the weight falls
  (none at 0).
- variant: '' (the paper's run), 'quick' or 'demo', as configs/g75_conv5.py.

Same data, frozen networks (../alexnet_identity/export, ../age_classifier/export) and
schedule as the paper's run.
"""
import ml_collections

from configs import g75_conv5
from ipcgan_jax import configlib


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    settings = configlib.parse_arg(arg, feature_layer=str, age_weight=float, variant=str)
    config = g75_conv5.get_config(settings.get("variant", ""))
    if "feature_layer" in settings:
        config.loss.feature_layer = "" if settings["feature_layer"] == "none" else settings["feature_layer"]
    if "age_weight" in settings:
        config.loss.age_weight = settings["age_weight"]
    return config
