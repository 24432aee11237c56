"""The embedded default: IPCGAN on the built-in synthetic aging faces, on a CPU.

  python main.py --config=configs/demo.py --workdir=workdirs/demo

Runs the paper's code paths (configs/g75_conv5.py), only smaller: 64x64 faces, narrower
networks, batch 16, 1,200 steps. It first trains its own small frozen networks into
WORKDIR/alexnet_identity, WORKDIR/age_classifier and WORKDIR/age_evaluator, then the
GAN. Measured on a shared 2-core CPU: 17.5 minutes in all; the age classifier reaches
85% on held-out identities, but after 1,200 steps the generator does not yet age faces
(README, "What the demo does"): its sample grids in WORKDIR/samples/ show the face's
layout, not yet the face. Evaluate: python main.py --config=configs/eval.py --workdir=workdirs/demo
"""
from configs import g75_conv5


def get_config(variant: str = "demo"):
    return g75_conv5.get_config(variant)
