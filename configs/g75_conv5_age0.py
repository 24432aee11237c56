"""Ablation of the paper: age loss weight 0 instead of 30 (otherwise configs/g75_conv5.py).

  python main.py --config=configs/g75_conv5_age0.py --workdir=workdirs/g75_conv5_age0

Same data, frozen networks (../alexnet_identity/export, ../age_classifier/export) and
schedule as the paper's run; expect weaker aging as the weight falls (none at 0).
Variants: ':quick', ':demo'.
"""
from configs import g75_conv5


def get_config(variant: str = ""):
    config = g75_conv5.get_config(variant)
    config.loss.age_weight = 0.0
    return config
