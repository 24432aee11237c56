"""Image statistics that expose two failures of a generator: grid artefacts and colour casts.

Grid artefacts. A stride-2 transposed convolution whose kernel does not divide by its
stride (3x3 here) gives some output pixels more kernel taps than their neighbours, so
the generator stamps a fixed pattern over every face: period 2 pixels from its last
upsampling layer, period 4 from the first (a checkerboard, Odena et al., Distill 2016).
A pattern of period 4 lives entirely at the 15 2-D frequencies whose indices on both
axes are multiples of size / 4 (0, half-Nyquist, Nyquist, ...; DC excluded), where a
natural face photo has little power. `grid_artefact_power` is an image's power at
exactly those frequencies, normalised by the squared pixel count so that it equals the
variance of the 4x4 tile of phase means (the mean of the pixels at each (y mod 4,
x mod 4)). The DFT treats an image as periodic, so the jumps between its opposite
borders (hair at the top, shoulders at the bottom, a lighting gradient) leak power into
these same bins: much of a face photo's power there, and a different amount for every
crop. The power is therefore taken of the image's periodic component
(`periodic_component`, Moisan's periodic-plus-smooth decomposition), its texture
without those jumps, so that crops shifted by a pixel or two agree within ~10%. A
checkerboard or stripes of amplitude a (pixels +-a) have power about a**2 (0.94-0.97 a**2
at 64x64: the decomposition hands the outermost rows to the smooth part) and add about
that much to a photo's. It is read as a ratio
(`power_ratio`): outputs against the real images they came from, ~1 when the outputs
have no more pattern than real photos, far above 1 when a grid is drawn. A generator
that blurs lowers the ratio, so it is reported beside the same ratio of real faces.

Stripes and other fine texture of any period. Where the true image of the output is
known (the synthetic data renders every face at every age), `high_frequency_energy` of
the residual output - truth, over that of the truth itself, measures texture the
generator drew that the true aged face does not have (faint stripes, noise, a grid of
any period): 0 for a perfect output; returning the input unchanged scores the wrinkles
and hairline it did not draw. The energy is the mean squared second difference along
the columns plus that along the rows, a high-pass filter that a smooth change
(greying, lighting) barely passes.

Colour cast. A generator that tints every output (the demo's transposed-conv run turned
faces pink) moves the image's mean colour off the grey axis. `colour_cast` is the
distance between the mean chroma (Cb, Cr of JPEG's YCbCr, 0..255 scale) of an output
and of a reference image: brightness changes (lighting, greying) leave it unchanged.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ipcgan_jax.constants import UPSAMPLING_GRID_PERIOD

# ITU-R BT.601 chroma rows of RGB -> YCbCr as JPEG (and PIL) define it, without the 128 offset.
_CHROMA_FROM_RGB = np.array([[-0.168736, -0.331264, 0.5],
                             [0.5, -0.418688, -0.081312]])


def _as_images(images: np.ndarray) -> np.ndarray:
    pixels = np.asarray(images, np.float64)
    if pixels.ndim < 3:
        raise ValueError(f"images must be (..., H, W, C), got shape {pixels.shape}")
    return pixels


def grid_frequencies(height: int, width: int, period: int = UPSAMPLING_GRID_PERIOD) -> list[tuple[int, int]]:
    """The (row, column) DFT bins of a (height, width) image where a pattern of `period`
    pixels has its power: multiples of height / period and width / period, DC excluded."""
    if height % period or width % period:
        raise ValueError(f"grid artefacts of period {period} need image sides divisible by {period}, "
                         f"got {height}x{width}")
    return [(u * height // period, v * width // period)
            for u in range(period) for v in range(period) if (u, v) != (0, 0)]


def _periodic_spectrum(pixels: np.ndarray) -> np.ndarray:
    """The DFT (over H, W) of `periodic_component(pixels)`."""
    height, width = pixels.shape[-3:-1]
    # The boundary image: each border pixel gets the jump to the opposite border.
    jumps = np.zeros_like(pixels)
    row_jump = pixels[..., -1, :, :] - pixels[..., 0, :, :]
    jumps[..., 0, :, :] += row_jump
    jumps[..., -1, :, :] -= row_jump
    column_jump = pixels[..., :, -1, :] - pixels[..., :, 0, :]
    jumps[..., :, 0, :] += column_jump
    jumps[..., :, -1, :] -= column_jump
    # The smooth part solves the periodic Poisson equation whose right-hand side is the boundary image.
    laplacian = (2 * np.cos(2 * np.pi * np.arange(height) / height)[:, None]
                 + 2 * np.cos(2 * np.pi * np.arange(width) / width)[None, :] - 4)
    laplacian[0, 0] = 1.0
    smooth = np.fft.fft2(jumps, axes=(-3, -2)) / laplacian[:, :, None]
    smooth[..., 0, 0, :] = 0.0
    return np.fft.fft2(pixels, axes=(-3, -2)) - smooth


def periodic_component(images: np.ndarray) -> np.ndarray:
    """Per image (..., H, W, C): the periodic component p of L. Moisan's periodic-plus-smooth
    decomposition u = p + s (J. Math. Imaging Vis. 39, 2011), the periodic image whose
    periodic Laplacian equals u's Laplacian taken inside the image only, with u's mean.
    The smooth rest s carries the jumps between opposite borders that a DFT would see."""
    return np.real(np.fft.ifft2(_periodic_spectrum(_as_images(images)), axes=(-3, -2)))


def grid_artefact_power(images: np.ndarray, period: int = UPSAMPLING_GRID_PERIOD) -> np.ndarray:
    """Per image (..., H, W, C) -> (...): the spectral power of its periodic component
    (`periodic_component`) at the frequencies of a `period`-pixel pattern
    (`grid_frequencies`), |DFT|^2 / (H W)^2 summed over those bins and averaged over
    channels: pixel units squared, the variance of the component's phase-mean tile."""
    pixels = _as_images(images)
    height, width = pixels.shape[-3:-1]
    rows, columns = zip(*grid_frequencies(height, width, period))
    spectrum = _periodic_spectrum(pixels)[..., rows, columns, :]
    return np.mean(np.sum(np.abs(spectrum) ** 2, axis=-2), axis=-1) / float(height * width) ** 2


def power_ratio(power: Sequence[float] | np.ndarray, reference_power: Sequence[float] | np.ndarray) -> float | None:
    """Mean grid power of some images over that of reference images (None when either set
    is empty or the references have none, e.g. flat images): ~1 means as little pattern
    as the references."""
    if not len(power) or not len(reference_power) or float(np.mean(reference_power)) <= 0.0:
        return None
    return float(np.mean(power)) / float(np.mean(reference_power))


def high_frequency_energy(images: np.ndarray) -> np.ndarray:
    """Per image (..., H, W, C), any real values (a difference of images too) -> the mean
    squared second difference down the columns plus that along the rows (pixel units**2)."""
    pixels = _as_images(images)
    down = pixels[..., 2:, :, :] - 2.0 * pixels[..., 1:-1, :, :] + pixels[..., :-2, :, :]
    along = pixels[..., :, 2:, :] - 2.0 * pixels[..., :, 1:-1, :] + pixels[..., :, :-2, :]
    return np.mean(down ** 2, axis=(-3, -2, -1)) + np.mean(along ** 2, axis=(-3, -2, -1))


def mean_chroma(images: np.ndarray) -> np.ndarray:
    """Per RGB image (..., H, W, 3) -> (..., 2): Cb, Cr of its mean colour (0..255 scale, 0 = grey)."""
    pixels = _as_images(images)
    if pixels.shape[-1] != 3:
        raise ValueError(f"images must be RGB (..., H, W, 3), got shape {pixels.shape}")
    return pixels.mean(axis=(-3, -2)) @ _CHROMA_FROM_RGB.T


def colour_cast(images: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Per image pair -> the distance between the mean chromas (`mean_chroma`) of an image
    and its reference, 0..255 scale."""
    return np.linalg.norm(mean_chroma(images) - mean_chroma(references), axis=-1)
