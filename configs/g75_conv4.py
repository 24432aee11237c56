"""Ablation of the paper: identity features from AlexNet conv4 instead of conv5.

  python main.py --config=configs/g75_conv4.py --workdir=workdirs/g75_conv4

Otherwise configs/g75_conv5.py (feature weight 0.5e-4 as in the original code; the
feature sum scales with the layer's size, so the effective weight differs by layer).
Variants: ':quick', ':demo'.
"""
from configs import g75_conv5


def get_config(variant: str = ""):
    config = g75_conv5.get_config(variant)
    config.loss.feature_layer = "conv4"
    return config
