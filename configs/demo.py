"""The embedded default: IPCGAN on the built-in synthetic aging faces, on a CPU.

  python main.py --config=configs/demo.py --workdir=workdirs/demo

Runs the paper's code paths (configs/g75_conv5.py), only smaller: 64x64 faces, narrower
networks, batch 16, 1,200 steps. It first trains its own small frozen networks into
WORKDIR/alexnet_identity, WORKDIR/age_classifier and WORKDIR/age_evaluator, then the
GAN. Expect it to finish within 15 minutes on a 2-core CPU, with sample grids in
WORKDIR/samples/ where the hair greys and wrinkles appear from left (11-20) to right
(51+). Then evaluate: python main.py --config=configs/eval.py --workdir=workdirs/demo
"""
from configs import g75_conv5


def get_config(variant: str = "demo"):
    return g75_conv5.get_config(variant)
