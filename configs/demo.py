"""The embedded default: IPCGAN on the built-in synthetic aging faces, on a CPU.

  python main.py --config=configs/demo.py --workdir=workdirs/demo

Runs the paper's code paths (configs/g75_conv5.py), only smaller: 64x64 faces, narrower
networks, batch 16, 1,200 steps. It first trains its own small frozen networks into
WORKDIR/alexnet_identity, WORKDIR/age_classifier and WORKDIR/age_evaluator, then the
GAN. Three settings differ from the paper's run, each for a failure measured at this
scale (ipcgan_jax/configlib.py, apply_variant): target groups mixed within a batch, the
identity loss on conv1, and age weight 15. Expect about 13 minutes on a 2-core CPU and
sample grids in WORKDIR/samples/ whose dark hair greys toward 41-50 and 51+ by step
1,200; the faces stay blurred and noisy at this length (README, "What the demo does").
Evaluate: python main.py --config=configs/eval.py --workdir=workdirs/demo
"""
from configs import g75_conv5


def get_config(variant: str = "demo"):
    return g75_conv5.get_config(variant)
