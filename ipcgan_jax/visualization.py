"""Image grids: sample sheets during training and result sheets for users; animations."""
from __future__ import annotations

import io
import itertools
import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def make_grid(rows: Sequence[Sequence[np.ndarray]], *, column_titles: Sequence[str] | None = None,
              padding: int = 2) -> np.ndarray:
    """Tiles equally sized uint8 images (rows x columns) into one uint8 image, with
    optional titles above the columns."""
    images = [[np.asarray(img, np.uint8) for img in row] for row in rows]
    h, w = images[0][0].shape[:2]
    num_cols = max(len(r) for r in images)
    title_h = 14 if column_titles else 0
    grid = np.zeros((title_h + len(images) * (h + padding) + padding,
                     num_cols * (w + padding) + padding, 3), np.uint8)
    for r, row in enumerate(images):
        for c, img in enumerate(row):
            y, x = title_h + padding + r * (h + padding), padding + c * (w + padding)
            grid[y:y + h, x:x + w] = img if img.ndim == 3 else img[..., None]
    if column_titles:
        canvas = Image.fromarray(grid)
        draw = ImageDraw.Draw(canvas)
        font = ImageFont.load_default()
        for c, title in enumerate(column_titles):
            draw.text((padding + c * (w + padding) + 2, 1), title, fill=(255, 255, 255), font=font)
        grid = np.asarray(canvas)
    return grid


def save_png(path: str, image: np.ndarray) -> None:
    Image.fromarray(np.asarray(image, np.uint8)).save(path)


def write_new_file(path: str, data: bytes) -> None:
    """Writes `data` to a new file at `path`: FileExistsError, touching nothing, when a file
    is there; a file that cannot be written whole (a full disk) is removed, and the OSError
    names it."""
    file = open(path, "xb")  # exclusive: an existing file is left as it is
    try:
        with file:
            file.write(data)
    except BaseException as error:
        os.remove(path)
        if isinstance(error, OSError):
            raise OSError(f"writing {path} failed: {error.strerror or error}; it was removed") from None
        raise


def save_png_beside(path: str, image: np.ndarray) -> str:
    """Writes `image` as a PNG at `path`, or, when a different file is there (never
    overwritten), at NAME_2.png, NAME_3.png, ...; a file with the same bytes (a resumed run
    drawing the same sheet again) is kept. Returns the path that holds the image."""
    data = png_bytes(image)
    stem, extension = os.path.splitext(path)
    for index in itertools.count(1):
        candidate = path if index == 1 else f"{stem}_{index}{extension}"
        try:
            write_new_file(candidate, data)
            return candidate
        except FileExistsError:
            with open(candidate, "rb") as f:
                if f.read() == data:
                    return candidate


# Animation formats `animation_bytes` writes: lossless animated WebP keeps every frame's
# pixels exactly; GIF reduces each frame to a 256-colour palette but plays everywhere.
ANIMATION_FORMATS = ("webp", "gif")


def animation_bytes(frames: Sequence[np.ndarray], *, frame_ms: int, image_format: str = "webp") -> bytes:
    """Equally sized uint8 RGB frames as a looping animation file's bytes (in memory).

    frame_ms: how long each frame shows, in milliseconds (GIF rounds it to 10 ms)."""
    if image_format not in ANIMATION_FORMATS:
        raise ValueError(f"animation format must be one of {ANIMATION_FORMATS}, got {image_format!r}")
    if len(frames) < 1 or int(frame_ms) < 1:
        raise ValueError(f"an animation needs frames and a positive frame time, got {len(frames)} "
                         f"frame(s) of {frame_ms} ms")
    images = [Image.fromarray(np.asarray(frame, np.uint8)) for frame in frames]
    options = {"lossless": True, "quality": 100, "method": 4} if image_format == "webp" else {"disposal": 1}
    buffer = io.BytesIO()
    images[0].save(buffer, format=image_format.upper(), save_all=True, append_images=images[1:],
                   duration=int(frame_ms), loop=0, **options)
    return buffer.getvalue()


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 image as PNG file bytes (in memory)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
