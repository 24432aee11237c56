"""The test report of a classifier run: WORKDIR/report/ with metrics.json,
confusion_matrix.json and confusion_matrix.png."""
from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ipcgan_jax import visualization

REPORT_DIR = "report"
# Confusion matrices up to this many classes are stored dense in JSON; larger ones
# (identities) as their non-zero entries.
_DENSE_CONFUSION_LIMIT = 64


def render_confusion_matrix(confusion: np.ndarray, class_names: tuple[str, ...]) -> np.ndarray:
    """uint8 RGB picture of a confusion matrix (rows true, columns predicted), shaded by the
    fraction of each true class; small matrices get labels and counts in the cells."""
    totals = np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fraction = confusion / totals
    num_classes = confusion.shape[0]
    if num_classes > 20:
        shade = (255 - np.round(fraction * 255)).astype(np.uint8)
        return np.repeat(shade[..., None], 3, axis=-1)
    cell, margin = 56, 64
    canvas = Image.new("RGB", (margin + cell * num_classes, margin + cell * num_classes + 16), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    draw.text((margin, 2), "predicted ->   (rows: true)", fill="black", font=font)
    for i, name in enumerate(class_names):
        draw.text((margin + i * cell + 4, 20), name, fill="black", font=font)
        draw.text((4, margin + i * cell + cell // 2 - 6), name, fill="black", font=font)
        for j in range(num_classes):
            level = int(255 - 200 * fraction[i, j])
            box = (margin + j * cell, margin + i * cell, margin + (j + 1) * cell - 1, margin + (i + 1) * cell - 1)
            draw.rectangle(box, fill=(level, level, 255), outline="gray")
            draw.text((box[0] + 6, box[1] + cell // 2 - 6), str(int(confusion[i, j])),
                      fill="white" if fraction[i, j] > 0.6 else "black", font=font)
    return np.asarray(canvas)


def write_report(report_dir: str, metrics: dict, confusion: np.ndarray, class_names: tuple[str, ...],
                 info: dict) -> None:
    """report_dir/metrics.json, confusion_matrix.json and confusion_matrix.png."""
    os.makedirs(report_dir, exist_ok=True)
    with open(os.path.join(report_dir, "metrics.json"), "w") as f:
        json.dump({**info, **metrics}, f, indent=2, sort_keys=True)
    record = {"classes": list(class_names), "rows": "true class", "columns": "predicted class",
              "total": int(confusion.sum()), "correct": int(np.trace(confusion))}
    if len(class_names) <= _DENSE_CONFUSION_LIMIT:
        record["matrix"] = confusion.tolist()
    else:
        rows, cols = np.nonzero(confusion)
        record["nonzero"] = [[int(r), int(c), int(confusion[r, c])] for r, c in zip(rows, cols)]
    with open(os.path.join(report_dir, "confusion_matrix.json"), "w") as f:
        json.dump(record, f, indent=1)
    visualization.save_png(os.path.join(report_dir, "confusion_matrix.png"),
                           render_confusion_matrix(confusion, class_names))
