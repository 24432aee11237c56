"""Pure Flax modules of IPCGAN: generator, discriminator, AlexNet with its two heads, and
the independent age evaluator and pytorch-fid's InceptionV3, used only for evaluation."""
from ipcgan_jax.models.age_evaluator import AgeEvaluator
from ipcgan_jax.models.alexnet import ACTIVATIONS, AlexNet, local_response_norm
from ipcgan_jax.models.discriminator import Discriminator
from ipcgan_jax.models.generator import Generator, ResidualBlock
from ipcgan_jax.models.inception import FIDInceptionV3
from ipcgan_jax.models.layers import ConvTransposeSame, TFBatchNorm, one_hot_maps

__all__ = ["ACTIVATIONS", "AgeEvaluator", "AlexNet", "ConvTransposeSame", "Discriminator",
           "FIDInceptionV3", "Generator", "ResidualBlock", "TFBatchNorm", "local_response_norm", "one_hot_maps"]
