"""Robust image reading: any common photo file -> uint8 RGB array.

Face photos come from many sources (CACD JPEGs, UTKFace, users' own phone pictures), so the
reader normalises every variant to one layout and turns every failure into one error type
that names the file and the reason, which the dataset builders count and report.

Conversions applied by `read_image`:
- EXIF orientation is applied first (phone pictures are often stored sideways).
- Transparency (RGBA, LA, palette with a transparent colour) is composited on **black**,
  the same colour the aligner uses to fill corners, so transparent areas look like padding.
- 16-bit grayscale is scaled with ``round(v * 255 / 65535)``; 16-bit RGB(A) PNGs are reduced
  by Pillow itself to their most significant byte (``v // 256``, at most 1 level off).
- Grayscale, bilevel, palette, CMYK, YCbCr and LAB are converted to RGB by Pillow.
- Multi-frame files (GIF, TIFF) give their first frame.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow opens 16-bit PNGs and TIFFs in these modes; plain "I" (32-bit integers, e.g. from
# TIFF) has no agreed 8-bit reading and is refused below.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class ImageReadError(ValueError):
    """A file could not be read as an image; `path` and `reason` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path!r}: {reason}")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file as a uint8 RGB array of shape (height, width, 3).

    Raises:
      ImageReadError: the file is missing, empty, not an image, truncated or corrupt, or
        holds a pixel format with no meaningful RGB reading (e.g. floating point).
    """
    path = Path(path)
    if path.is_dir():
        raise ImageReadError(path, "a folder, not an image file")
    if not path.exists():
        raise ImageReadError(path, "file does not exist")
    if not path.is_file():
        raise ImageReadError(path, "not a regular file (a device, pipe or socket)")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "empty file")
    try:
        with Image.open(path) as image:
            # Decoding happens lazily; load() forces it so truncation is seen here and
            # not as grey blocks later (LOAD_TRUNCATED_IMAGES is deliberately left off).
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb_array(image, path)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image format") from None
    except Image.DecompressionBombError as error:
        raise ImageReadError(path, f"image too large ({error})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        reason = str(error) or type(error).__name__
        if "truncated" in reason.lower():
            reason = f"truncated file ({reason})"
        else:
            reason = f"corrupt image data ({reason})"
        raise ImageReadError(path, reason) from None


def _to_rgb_array(image: Image.Image, path: Path) -> np.ndarray:
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.rint(values * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("F", "I") or mode.startswith("I;") or mode.startswith("F;"):
        raise ImageReadError(path, f"unsupported pixel format {mode!r}")
    has_transparency = mode in _ALPHA_MODES or "transparency" in image.info
    if has_transparency:
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, rgba)
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageReadError(path, f"image has no pixels (shape {rgb.shape})")
    return np.ascontiguousarray(rgb)


def as_rgb_uint8(image: np.ndarray | str | os.PathLike) -> np.ndarray:
    """A path (read with `read_image`: EXIF rotation, alpha on black, any mode) or an
    array: (H, W) grayscale, (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA, uint8 or floats
    in 0..255 -> (H, W, 3) uint8."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or min(array.shape[:2]) == 0:
        raise ValueError(f"expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got shape {array.shape}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
            raise ValueError(f"image must hold finite numbers in 0..255, got dtype {array.dtype}")
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    if array.shape[2] == 4:  # alpha on black, as read_image and the aligner's fill
        alpha = array[:, :, 3:].astype(np.float32) / 255.0
        array = np.rint(array[:, :, :3] * alpha).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array)
