"""TF1's legacy bilinear resize in numpy, bit-identical to TF's float32 result.

`tf.compat.v1.image.resize_bilinear(images, size, align_corners=False)`: no half-pixel
centres, no antialiasing, source coordinates computed in float32 as dst * (in / out), x
interpolated first, then y, each as a + (b - a) * fraction in float32, as TF's CPU kernel
does. The numpy input backend relies on the bit identity (tested against TF).
"""
from __future__ import annotations

import numpy as np


def legacy_source_coords(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower index, upper index, float32 fraction) of each output coordinate."""
    scale = np.float32(in_size) / np.float32(out_size)
    source = np.arange(out_size, dtype=np.float32) * scale
    low = np.floor(source).astype(np.int32)
    high = np.minimum(low + 1, in_size - 1)
    fraction = source - low.astype(np.float32)
    return low, high, fraction


def _lerp_in_place(low: np.ndarray, high: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """low + (high - low) * fraction, in float32, written over `high` (no temporaries:
    the backend resizes whole batches, and every pass over them counts)."""
    high -= low
    high *= fraction
    high += low
    return high


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (k, H, W, C) -> float32 (k, size, size, C). The gathers run on the uint8
    pixels (4x fewer bytes), which become float32 exactly as in TF."""
    y_low, y_high, y_fraction = legacy_source_coords(images.shape[1], size)
    x_low, x_high, x_fraction = legacy_source_coords(images.shape[2], size)
    x_fraction = x_fraction[None, None, :, None]

    def along_x(rows: np.ndarray) -> np.ndarray:
        return _lerp_in_place(np.take(rows, x_low, axis=2).astype(np.float32),
                              np.take(rows, x_high, axis=2).astype(np.float32), x_fraction)

    top = along_x(np.take(images, y_low, axis=1))
    bottom = along_x(np.take(images, y_high, axis=1))
    return _lerp_in_place(top, bottom, y_fraction[None, :, None, None])
