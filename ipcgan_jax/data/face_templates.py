"""Named face templates: where an aligned crop puts the 5 landmarks.

The template says where the 5 landmarks land in the crop. Its points sit in a unit face
frame; `padding` widens that frame by this fraction of its side on every side to make the
crop, and `vertical_shift` moves the face down (positive) as a fraction of the output
size, trading chin room for forehead room. Named templates (`FACE_TEMPLATES`), each with
its own padding and shift:

- "cacd" (the default): the framing of the 400x400 CACD crops the original IPCGAN code
  made, the robust mean of the landmarks dlib finds on 31 of them
  (benchmarks/bench_cacd_framing.py), so that a CACD face aligned with it is framed like
  the original's training faces: forehead and some hair above the brows
  (docs/faithfulness.md §11).
- "utkface": the framing of UTKFace's "aligned and cropped" 200x200 chips, the robust
  mean of the landmarks dlib finds on them (benchmarks/bench_utkface_framing.py), so
  that a photo aligned with it is framed like the chips a model was trained on.

Both are stored as landmark positions in the crop; the face frame of each is placed
where dlib's mean 5-point face (the one `dlib.get_face_chip` uses, in which the
68-point face spans the unit square: brow top 0, chin 1) fits those positions best.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ipcgan_jax.constants import ALIGNMENT_TEMPLATES

# dlib's shape_predictor_5_face_landmarks order: 0/1 outer/inner corner of the eye on the
# image's right, 2/3 outer/inner corner of the eye on the image's left, 4 nose base.
# Values copied from dlib/image_transforms/interpolation.h (get_face_chip_details).
DLIB_FIVE_POINT_TEMPLATE = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ],
    dtype=np.float64,
)

# UTKFace's chips: the robust mean of dlib's 5 landmarks, same order, as fractions of the
# chip side (0..1 spans the outer pixel edges), over 17,723 of the 18,987 UTKFace chips
# of docs/real_faces.md (dlib finds no face on 638; 626 lie far from the median face),
# measured by benchmarks/bench_utkface_framing.py (docs/real_faces.md). Close to dlib's
# mean face at padding 0.195 and shift 0.004.
UTKFACE_CHIP_LANDMARKS = np.array(
    [
        [0.7595, 0.3008],
        [0.6074, 0.3091],
        [0.2254, 0.2997],
        [0.3784, 0.3089],
        [0.4928, 0.5925],
    ],
    dtype=np.float64,
)

# The original IPCGAN's 400x400 CACD crops: the robust mean of dlib's 5 landmarks, same
# order, as fractions of the crop side, over 30 of the 31 crops of the original's public
# samples (17_Tania_Raymonde_0017 lies far from the median face), measured by
# benchmarks/bench_cacd_framing.py. Close to dlib's mean face at padding 0.345 and shift
# 0.093. Re-aligning the 31 crops to it: median scale 1.004, median centre shift
# (+0.2, -0.3) px of 400. The template used before, dlib's mean face at padding 0.2 and
# shift 0.03, cut the forehead and hair: it re-aligned them at scale 1.21 with the centre
# 33 px up. tests/test_alignment.py checks both on the landmarks stored in
# tests/data/cacd_original_crop_landmarks.json.
CACD_CROP_LANDMARKS = np.array(
    [
        [0.7148, 0.4281],
        [0.5933, 0.4302],
        [0.2814, 0.4228],
        [0.4030, 0.4282],
        [0.4984, 0.6703],
    ],
    dtype=np.float64,
)

DEFAULT_TEMPLATE = "cacd"


@dataclasses.dataclass(frozen=True)
class FaceTemplate:
    """A named crop layout: landmark `points` (5, 2) in the unit face frame, and the
    `padding` and `vertical_shift` that place that frame in the crop (module doc)."""

    points: np.ndarray
    padding: float
    vertical_shift: float


def fit_padding_and_shift(crop_points: np.ndarray) -> tuple[float, float]:
    """The (padding, vertical_shift) that put dlib's mean face closest to `crop_points`.

    crop_points: (5, 2) landmark positions as fractions of the crop side. A template
    point is 0.5 + s * (T - 0.5) + (0, shift) with s = 1 / (1 + 2 padding): linear in
    (s, shift), so least squares gives both.
    """
    centred = DLIB_FIVE_POINT_TEMPLATE - 0.5
    design = np.zeros((10, 2))
    design[:5, 0], design[5:, 0], design[5:, 1] = centred[:, 0], centred[:, 1], 1.0
    target = np.concatenate([crop_points[:, 0] - 0.5, crop_points[:, 1] - 0.5])
    (scale, shift), *_ = np.linalg.lstsq(design, target, rcond=None)
    return float((1.0 / scale - 1.0) / 2.0), float(shift)


def robust_mean_landmarks(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How the measured templates are made from many crops' landmarks.

    points: (N, 5, 2) landmarks as fractions of the crop side. Returns the (5, 2) mean
    over the crops whose landmarks lie within 2.5x the median distance (RMS over the 5
    points) of the median face, and the (N,) bool mask of the crops kept, so that a
    few failed detections or turned heads do not pull the framing.
    """
    median = np.median(points, axis=0)
    distance = np.sqrt(((points - median) ** 2).sum(axis=2).mean(axis=1))
    kept = distance <= 2.5 * np.median(distance)
    return points[kept].mean(axis=0), kept


def _template_from_crop_points(crop_points: np.ndarray) -> FaceTemplate:
    """The template that reproduces `crop_points` exactly, its face frame placed where
    dlib's mean face fits them best (so that the frame means the same in every
    template: the face box `ipcgan_jax.identity` hands dlib's landmark model)."""
    padding, shift = fit_padding_and_shift(crop_points)
    points = (crop_points - np.array([0.0, shift])) * (1.0 + 2.0 * padding) - padding
    return FaceTemplate(points=points, padding=padding, vertical_shift=shift)


FACE_TEMPLATES: dict[str, FaceTemplate] = {
    "cacd": _template_from_crop_points(CACD_CROP_LANDMARKS),
    "utkface": _template_from_crop_points(UTKFACE_CHIP_LANDMARKS),
}
# The default template's own layout (what `framing.AlignmentSettings` starts from).
DEFAULT_PADDING = FACE_TEMPLATES[DEFAULT_TEMPLATE].padding
DEFAULT_VERTICAL_SHIFT = FACE_TEMPLATES[DEFAULT_TEMPLATE].vertical_shift


assert tuple(FACE_TEMPLATES) == ALIGNMENT_TEMPLATES, "constants.ALIGNMENT_TEMPLATES names the templates here"


def get_template(name: str) -> FaceTemplate:
    """The named template; ValueError naming the choices for an unknown name."""
    if name not in FACE_TEMPLATES:
        raise ValueError(f"unknown alignment template {name!r}; choose from {sorted(FACE_TEMPLATES)}")
    return FACE_TEMPLATES[name]
