"""Ablation of the paper: identity features from AlexNet fc6 instead of conv5.

  python main.py --config=configs/g75_fc6.py --workdir=workdirs/g75_fc6

Otherwise configs/g75_conv5.py (feature weight 0.5e-4 as in the original code; the
feature sum scales with the layer's size, so the effective weight differs by layer).
Variants: ':quick', ':demo'.
"""
from configs import g75_conv5


def get_config(variant: str = ""):
    config = g75_conv5.get_config(variant)
    config.loss.feature_layer = "fc6"
    return config
