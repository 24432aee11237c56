"""Fréchet Inception Distance: the math, the standard InceptionV3 features, and a plug-in
interface for other extractors.

FID (Heusel et al. 2017) = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between
Gaussians fitted to two sets of features, conventionally InceptionV3's 2048-d pool3
output. `inception_extractor(weights_path)` computes exactly pytorch-fid's features with a
pure Flax port (`ipcgan_jax.models.inception`) from pytorch-fid's released weights
`pt_inception-2015-12-05-6726825d.pth` (read without torch by `ipcgan_jax.weights`), which
the user downloads: this project bundles no weights. The evaluation uses it when the config field
`fid_inception_weights` names that file. Any other extractor plugs in instead through

  config field `fid_feature_extractor = "package.module:factory"`
  factory() -> extract(images: uint8 (N, H, W, 3) RGB) -> float (N, D) features

Without either, FID is skipped and the report says so. Numbers from different extractors
or image sizes are not comparable.
"""
from __future__ import annotations

import importlib
from typing import Callable

import jax
import numpy as np
import scipy.linalg

from ipcgan_jax.models import inception
from ipcgan_jax.weights import fid_inception

INCEPTION_WEIGHTS_FILE = fid_inception.WEIGHTS_FILE
INCEPTION_WEIGHTS_URL = fid_inception.WEIGHTS_URL

FeatureExtractor = Callable[[np.ndarray], np.ndarray]


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), covariance (D, D)) of (N, D) features, unbiased (N - 1), float64."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mean_a, cov_a) and N(mean_b, cov_b).

    A near-singular product (fewer samples than dimensions) gets `eps` added to both
    diagonals, as pytorch-fid does; the tiny imaginary part sqrtm leaves from round-off
    is dropped."""
    mean_a, mean_b = np.atleast_1d(mean_a).astype(np.float64), np.atleast_1d(mean_b).astype(np.float64)
    cov_a, cov_b = np.atleast_2d(cov_a).astype(np.float64), np.atleast_2d(cov_b).astype(np.float64)
    if mean_a.shape != mean_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != mean_a.shape * 2:
        raise ValueError(f"mismatched statistics: means {mean_a.shape} {mean_b.shape}, "
                         f"covariances {cov_a.shape} {cov_b.shape}")
    root, _ = scipy.linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.all(np.isfinite(root)):
        offset = np.eye(len(cov_a)) * eps
        root = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    root = np.real(root)
    difference = mean_a - mean_b
    return float(difference @ difference + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root))


def fid_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two (N, D) feature sets."""
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


def load_feature_extractor(spec: str) -> FeatureExtractor:
    """'package.module:factory' -> factory(), checked to be callable."""
    module_name, _, factory_name = spec.partition(":")
    if not module_name or not factory_name:
        raise ValueError(f"fid_feature_extractor must be 'package.module:factory', got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"fid_feature_extractor {spec!r} cannot be loaded: {error}") from None
    extractor = factory()
    if not callable(extractor):
        raise ValueError(f"fid_feature_extractor {spec!r}: {factory_name}() did not return a callable")
    return extractor


def inception_extractor(weights_path: str, batch_size: int = 50) -> FeatureExtractor:
    """pytorch-fid's pool3 features: extract(uint8 (N, H, W, 3) RGB) -> float32 (N, 2048).

    `weights_path`: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (either
    torch.save format) or an .npz with its keys. Images go through in batches of
    `batch_size` (the last padded), so each image size compiles once."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    module = inception.FIDInceptionV3()
    variables = jax.device_put(fid_inception.load_inception_variables(weights_path))
    features_of = jax.jit(module.apply)

    def extract(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected RGB images (N, H, W, 3), got shape {images.shape}")
        features = []
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            padded = np.concatenate([batch, np.zeros((batch_size - len(batch),) + batch.shape[1:], batch.dtype)])
            features.append(np.asarray(features_of(variables, padded))[:len(batch)])
        return np.concatenate(features) if features else np.zeros((0, inception.FEATURES), np.float32)

    return extract
