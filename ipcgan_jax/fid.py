"""Fréchet Inception Distance: the math here, the features from a pluggable extractor.

FID (Heusel et al. 2017) = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between
Gaussians fitted to two sets of features, conventionally InceptionV3's 2048-d pool3
output (pytorch-fid's `pt_inception-2015-12-05` weights, the TF FID graph). This project
bundles no InceptionV3 (network nor weights). The evaluation takes any extractor through
a documented interface:

  config field `fid_feature_extractor = "package.module:factory"`
  factory() -> extract(images: uint8 (N, H, W, 3) RGB) -> float (N, D) features

e.g. with pytorch-fid installed, a factory returning
  `lambda x: InceptionV3([3])(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255)[0]
             .squeeze(-1).squeeze(-1).numpy()`
gives the standard FID (wrap it in `torch.no_grad()`). Without one, FID is skipped and
the report says so. Numbers from different extractors or image sizes are not comparable.
"""
from __future__ import annotations

import importlib
from typing import Callable

import numpy as np
import scipy.linalg

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
