"""Ablation of the paper: no identity feature loss (otherwise configs/g75_conv5.py).

  python main.py --config=configs/g75_nofeature.py --workdir=workdirs/g75_nofeature

Expect outputs that drift from the input identity. Variants: ':quick', ':demo'.
"""
from configs import g75_conv5


def get_config(variant: str = ""):
    config = g75_conv5.get_config(variant)
    config.loss.feature_layer = ""
    return config
