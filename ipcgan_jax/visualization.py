"""Image grids: sample sheets during training and result sheets for users."""
from __future__ import annotations

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
