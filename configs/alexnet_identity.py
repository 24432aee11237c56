"""AlexNet identity features: the frozen trunk of the identity loss (docs/faithfulness.md §6).

  python main.py --config=configs/alexnet_identity.py --workdir=workdirs/alexnet_identity
  python main.py --config=configs/alexnet_identity.py --workdir=workdirs/alexnet_identity \
      --config.init.bvlc_npy=/path/to/bvlc_alexnet.npy     # fine-tune from ImageNet

Trains conv1..conv5, fc6, fc7 and the identity head (new_1 256 -> new_2) on the CACD
training split's celebrities (TFDS 'cacd', default identity-disjoint split: about 1,800 of
the 2,000), 227x227 AlexNet scaling, dropout 0.5 on fc6/fc7, random flips, SGD momentum
0.9, learning rate 0.01 (new_1/new_2 x10) with cosine decay, weight decay 5e-4, batch 128,
60,000 steps. Identity accuracy is measured on 10% of every training celebrity's images,
held out (report/ in the workdir). Writes WORKDIR/export, which configs/g75_conv5.py reads
as ../alexnet_identity/export. The original's fine-tuning recipe was not released; these
settings are the usual AlexNet ones and were not run here (no CACD images in this
repository), so no accuracy is claimed for them.

Variants: ':quick' (tests, seconds on tiny synthetic faces) and ':demo' (the demo's
synthetic faces and network sizes, about three minutes on a 2-core CPU).
"""
import ml_collections

from configs import defaults


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """variant: '' (CACD, full size), 'quick' or 'demo' (configs/defaults.py)."""
    return defaults.classifier("alexnet_identity", variant)
