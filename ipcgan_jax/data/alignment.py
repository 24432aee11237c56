"""Face detection, 5-point landmarks and similarity alignment to IPCGAN-style crops.

The original IPCGAN never published its alignment recipe; its 400x400 CACD crops show the
face with its forehead and some hair but no shoulders, eyes level, the face centred and
black corners where rotation left them empty (docs/faithfulness.md §11). This module
reproduces that look offline with dlib's HOG frontal face detector and the 5-point
landmark model shipped in `face_recognition_models`, then a least-squares similarity
transform (rotation, uniform scale, translation; Umeyama 1991) from the landmarks to a
fixed template.

Coordinates: points are (x, y) with pixel centres at integers (dlib's convention). A 2x3
`transform` maps original-image points to aligned-image points: ``q = A @ p + t``.

The template (where the 5 landmarks land in the crop) is one of the named ones of
`ipcgan_jax.data.face_templates`: "cacd" by default (measured on the original's crops),
or "utkface". `crop_realignment` says how far an already aligned crop is from a template.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from types import ModuleType
from typing import Callable, Literal, Sequence

import numpy as np
from PIL import Image

from ipcgan_jax.data.face_templates import DEFAULT_TEMPLATE, get_template

DEFAULT_OUTPUT_SIZE = 400

# box: (left, top, right, bottom) in pixels. A detector returns [(box, score), ...].
FaceDetectorFn = Callable[[np.ndarray, int], Sequence[tuple[Sequence[float], float]]]
# A landmark predictor returns the (5, 2) landmarks of the face inside `box`.
LandmarkPredictorFn = Callable[[np.ndarray, Sequence[float]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class DetectedFace:
    """One face: box (left, top, right, bottom), landmarks (5, 2) as (x, y), detector score."""

    box: np.ndarray
    landmarks: np.ndarray
    score: float

    @property
    def area(self) -> float:
        left, top, right, bottom = self.box
        return float(max(right - left, 0.0) * max(bottom - top, 0.0))


@dataclasses.dataclass(frozen=True)
class AlignedFace:
    """An aligned crop and how it was made.

    image: (S, S, 3) uint8. transform: (2, 3) affine, original -> aligned pixel coordinates.
    landmarks: (5, 2) landmarks in the original image. box: the detector box in the original.
    num_faces_found: how many faces the detector saw in the original image.
    """

    image: np.ndarray
    transform: np.ndarray
    landmarks: np.ndarray
    box: np.ndarray
    num_faces_found: int


def estimate_similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (2, 3) mapping `source` points onto `target`.

    Umeyama's closed form: rotation + uniform scale + translation, no reflection.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2:
        raise ValueError(
            f"need two (N, 2) point arrays of equal shape, got {source.shape} and {target.shape}"
        )
    if source.shape[0] < 2:
        raise ValueError("a similarity transform needs at least 2 points")
    source_mean = source.mean(axis=0)
    target_mean = target.mean(axis=0)
    source_centred = source - source_mean
    target_centred = target - target_mean
    source_variance = (source_centred**2).sum() / len(source)
    if source_variance <= 0:
        raise ValueError("source points all coincide; no transform is defined")
    covariance = target_centred.T @ source_centred / len(source)
    u, singular_values, vt = np.linalg.svd(covariance)
    reflection_fix = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        reflection_fix[1, 1] = -1.0
    rotation = u @ reflection_fix @ vt
    scale = (singular_values * np.diag(reflection_fix)).sum() / source_variance
    linear = scale * rotation
    translation = target_mean - linear @ source_mean
    return np.concatenate([linear, translation[:, None]], axis=1)


def apply_transform(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Maps (N, 2) points through a (2, 3) affine transform."""
    points = np.asarray(points, dtype=np.float64)
    return points @ transform[:, :2].T + transform[:, 2]


def invert_transform(transform: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine transform."""
    linear_inverse = np.linalg.inv(transform[:, :2])
    return np.concatenate([linear_inverse, (-linear_inverse @ transform[:, 2])[:, None]], axis=1)


def face_template(
    output_size: int,
    padding: float | None = None,
    vertical_shift: float | None = None,
    template: str = DEFAULT_TEMPLATE,
) -> np.ndarray:
    """The (5, 2) landmark positions, in output pixels, that every face is aligned to.

    padding, vertical_shift: None keeps the named template's own.
    """
    named = get_template(template)
    padding = named.padding if padding is None else padding
    vertical_shift = named.vertical_shift if vertical_shift is None else vertical_shift
    normalised = (named.points + padding) / (1.0 + 2.0 * padding)
    normalised = normalised + np.array([0.0, vertical_shift])
    # Normalised 0..1 spans the outer pixel edges; pixel centres sit half a pixel inside.
    return normalised * output_size - 0.5


@dataclasses.dataclass(frozen=True)
class Realignment:
    """What re-aligning an already aligned crop does to it (`crop_realignment`).

    scale: > 1 when the template's crop is tighter than the crop's own framing.
    rotation_degrees: positive turns the crop clockwise on screen (y points down).
    centre_shift: (x, y) pixels of the crop side, where the crop's centre moves (+ right,
    + down).
    """

    scale: float
    rotation_degrees: float
    centre_shift: np.ndarray


def crop_realignment(landmarks: np.ndarray, crop_size: int, template: str = DEFAULT_TEMPLATE) -> Realignment:
    """The similarity that would re-align a `crop_size` square crop, whose 5 landmarks are
    `landmarks` (5, 2) in its pixels, to the named template at the same size: the
    identity (scale 1, no rotation, no shift) for a crop framed exactly like it."""
    transform = estimate_similarity_transform(landmarks, face_template(crop_size, template=template))
    centre = np.full((1, 2), (crop_size - 1) / 2.0)
    return Realignment(
        scale=float(np.sqrt(abs(np.linalg.det(transform[:, :2])))),
        rotation_degrees=float(np.degrees(np.arctan2(transform[1, 0], transform[0, 0]))),
        centre_shift=apply_transform(transform, centre)[0] - centre[0],
    )


def warp_affine(
    image: np.ndarray,
    transform: np.ndarray,
    output_shape: tuple[int, int],
    *,
    fill: float = 0.0,
) -> np.ndarray:
    """Warps `image` (H, W[, C]) so that output[q] = image[p] where q = transform(p).

    Bilinear; points outside the source get `fill`. Strong shrinking first box-filters the
    source by an integer factor, because bilinear sampling alone would alias.
    """
    image = np.asarray(image)
    linear_scale = math.sqrt(abs(np.linalg.det(transform[:, :2])))
    reduce_factor = max(1, int(math.floor(1.0 / linear_scale))) if linear_scale > 0 else 1
    if reduce_factor > 1 and min(image.shape[:2]) >= 2 * reduce_factor:
        image, transform = _box_reduce(image, transform, reduce_factor)
    inverse = invert_transform(transform)
    linear = inverse[:, :2]
    # PIL samples in continuous coordinates (pixel centres at i + 0.5).
    offset = inverse[:, 2] - linear @ np.array([0.5, 0.5]) + 0.5
    coefficients = (linear[0, 0], linear[0, 1], offset[0], linear[1, 0], linear[1, 1], offset[1])
    height, width = output_shape
    if image.ndim == 2 or image.dtype != np.uint8:
        channels = image[:, :, None] if image.ndim == 2 else image
        planes = [
            Image.fromarray(np.ascontiguousarray(channels[:, :, c], dtype=np.float32), mode="F")
            .transform((width, height), Image.Transform.AFFINE, coefficients,
                       resample=Image.Resampling.BILINEAR, fillcolor=float(fill))
            for c in range(channels.shape[2])
        ]
        stacked = np.stack([np.asarray(plane) for plane in planes], axis=2)
        return stacked[:, :, 0] if image.ndim == 2 else stacked
    warped = Image.fromarray(np.ascontiguousarray(image)).transform(
        (width, height), Image.Transform.AFFINE, coefficients,
        resample=Image.Resampling.BILINEAR, fillcolor=(int(fill),) * image.shape[2],
    )
    return np.asarray(warped)


def _box_reduce(image: np.ndarray, transform: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Shrinks by an integer box filter and rewrites `transform` for the reduced image."""
    if image.ndim == 3 and image.dtype == np.uint8:
        reduced = np.asarray(Image.fromarray(np.ascontiguousarray(image)).reduce(factor))
    else:
        height = image.shape[0] // factor * factor
        width = image.shape[1] // factor * factor
        cropped = image[:height, :width].astype(np.float64)
        reduced = cropped.reshape(height // factor, factor, width // factor, factor, -1).mean(axis=(1, 3))
        reduced = reduced.reshape(reduced.shape[:2] + image.shape[2:]).astype(image.dtype)
    # Reduced pixel centre r corresponds to original point (r + 0.5) * factor - 0.5.
    reduced_to_original = np.array([[factor, 0.0, 0.5 * factor - 0.5], [0.0, factor, 0.5 * factor - 0.5]])
    return reduced, compose_transforms(transform, reduced_to_original)


def compose_transforms(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The (2, 3) affine `outer ∘ inner` (apply `inner` first)."""
    linear = outer[:, :2] @ inner[:, :2]
    translation = outer[:, :2] @ inner[:, 2] + outer[:, 2]
    return np.concatenate([linear, translation[:, None]], axis=1)


def resize_transform(from_size: int, to_size: int) -> np.ndarray:
    """The (2, 3) map between pixel centres of a square image resized from_size -> to_size."""
    ratio = to_size / from_size
    shift = 0.5 * ratio - 0.5
    return np.array([[ratio, 0.0, shift], [0.0, ratio, shift]])


def import_dlib() -> tuple[ModuleType, ModuleType]:
    """(dlib, face_recognition_models), imported when a detector, predictor or identity
    judge is made rather than with this module: training imports it (through the
    inference and evaluation code) on hosts without dlib, such as a GPU machine."""
    try:
        return importlib.import_module("dlib"), importlib.import_module("face_recognition_models")
    except ImportError as error:
        raise ImportError(f"face detection, landmarks and identity metrics need dlib ({error}); install "
                          "the requirements' dlib-bin and face-recognition-models") from None


class DlibFaceDetector:
    """dlib's HOG frontal face detector as a `FaceDetectorFn`."""

    def __init__(self) -> None:
        dlib, _ = import_dlib()
        self._detector = dlib.get_frontal_face_detector()

    def __call__(self, image: np.ndarray, upsample: int) -> list[tuple[tuple[float, ...], float]]:
        rectangles, scores, _ = self._detector.run(image, upsample, 0.0)
        return [
            ((float(r.left()), float(r.top()), float(r.right()), float(r.bottom())), float(score))
            for r, score in zip(rectangles, scores)
        ]


class DlibFivePointPredictor:
    """dlib's 5-point shape predictor (from face_recognition_models) as a `LandmarkPredictorFn`."""

    def __init__(self, model_path: str | None = None) -> None:
        self._dlib, models = import_dlib()
        if model_path is None:
            model_path = models.pose_predictor_five_point_model_location()
        self._predictor = self._dlib.shape_predictor(model_path)

    def __call__(self, image: np.ndarray, box: Sequence[float]) -> np.ndarray:
        left, top, right, bottom = (int(round(v)) for v in box)
        shape = self._predictor(image, self._dlib.rectangle(left, top, right, bottom))
        return np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], dtype=np.float64)


class FaceAligner:
    """Detects faces and aligns one of them to an IPCGAN-style square crop.

    Args:
      output_size: side of the aligned square in pixels.
      padding: margin around the face frame, as a fraction of its size (see module doc);
        None: the template's.
      vertical_shift: downward shift of the face, as a fraction of the output size; None:
        the template's.
      upsample: how many times dlib doubles the image before detecting (finds small faces,
        costs 4x time per step).
      face_detector, landmark_predictor: stand-ins for dlib (tests, other models).
      template: a name in `FACE_TEMPLATES` ("cacd", "utkface").
    """

    def __init__(
        self,
        output_size: int = DEFAULT_OUTPUT_SIZE,
        padding: float | None = None,
        vertical_shift: float | None = None,
        upsample: int = 1,
        face_detector: FaceDetectorFn | None = None,
        landmark_predictor: LandmarkPredictorFn | None = None,
        template: str = DEFAULT_TEMPLATE,
    ) -> None:
        named = get_template(template)
        padding = named.padding if padding is None else padding
        vertical_shift = named.vertical_shift if vertical_shift is None else vertical_shift
        if output_size < 8:
            raise ValueError(f"output_size must be at least 8 pixels, got {output_size}")
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        if upsample < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        self.output_size = int(output_size)
        self.padding = float(padding)
        self.vertical_shift = float(vertical_shift)
        self.upsample = int(upsample)
        self.template_name = template
        self.template = face_template(self.output_size, self.padding, self.vertical_shift, template)
        self._face_detector = face_detector if face_detector is not None else DlibFaceDetector()
        self._landmark_predictor = (
            landmark_predictor if landmark_predictor is not None else DlibFivePointPredictor()
        )

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        """All faces in an (H, W, 3) uint8 RGB image, in the detector's order."""
        image = _as_rgb_uint8(image)
        faces = []
        for box, score in self._face_detector(image, self.upsample):
            box = np.asarray(box, dtype=np.float64)
            landmarks = np.asarray(self._landmark_predictor(image, box), dtype=np.float64)
            if landmarks.shape != (5, 2):
                raise ValueError(f"landmark predictor must return (5, 2) points, got {landmarks.shape}")
            faces.append(DetectedFace(box=box, landmarks=landmarks, score=float(score)))
        return faces

    def transform_for(self, landmarks: np.ndarray) -> np.ndarray:
        """The (2, 3) original -> aligned transform for a face's (5, 2) landmarks."""
        return estimate_similarity_transform(landmarks, self.template)

    def align(
        self, image: np.ndarray, *, face: Literal["largest", "best"] | int = "largest"
    ) -> AlignedFace | None:
        """Aligns one face of `image`; None when no face is found.

        face: "largest" (by box area), "best" (highest detector score) or an index into
        `detect(image)`.
        """
        image = _as_rgb_uint8(image)
        faces = self.detect(image)
        if not faces:
            return None
        if face == "largest":
            chosen = max(faces, key=lambda f: f.area)
        elif face == "best":
            chosen = max(faces, key=lambda f: f.score)
        elif isinstance(face, int) and not isinstance(face, bool):
            if not -len(faces) <= face < len(faces):
                raise IndexError(f"face index {face} out of range: {len(faces)} face(s) found")
            chosen = faces[face]
        else:
            raise ValueError(f"face must be 'largest', 'best' or an int, got {face!r}")
        transform = self.transform_for(chosen.landmarks)
        aligned = warp_affine(image, transform, (self.output_size, self.output_size))
        return AlignedFace(
            image=aligned,
            transform=transform,
            landmarks=chosen.landmarks,
            box=chosen.box,
            num_faces_found=len(faces),
        )


def paste_back(
    original: np.ndarray,
    aligned_result_image: np.ndarray,
    transform: np.ndarray,
    *,
    aligned_size: int | None = None,
    feather: float = 0.1,
) -> np.ndarray:
    """Warps a (possibly resized) aligned face back into the original photo.

    Args:
      original: (H, W, 3) uint8, the photo the face was aligned from.
      aligned_result_image: (G, G, 3) uint8, e.g. a 128x128 generator output made from the
        aligned crop.
      transform: the `AlignedFace.transform` (original -> aligned pixels).
      aligned_size: side of the aligned crop `transform` was made for; None means the
        result has not been resized (G). Pass it whenever G differs, e.g. 400.
      feather: width of the soft edge of the pasted square, as a fraction of its side;
        the blend weight ramps linearly from 0 at the border to 1 inside it.

    Returns:
      (H, W, 3) uint8: the original with the face region replaced.
    """
    original = _as_rgb_uint8(original)
    result = _as_rgb_uint8(aligned_result_image)
    result_size = result.shape[0]
    if result.shape[1] != result_size:
        raise ValueError(f"aligned result must be square, got {result.shape}")
    if not 0.0 <= feather <= 0.5:
        raise ValueError(f"feather must be in [0, 0.5], got {feather}")
    aligned_size = result_size if aligned_size is None else int(aligned_size)
    original_to_result = compose_transforms(resize_transform(aligned_size, result_size), transform)
    result_to_original = invert_transform(original_to_result)
    height, width = original.shape[:2]
    warped_face = warp_affine(result.astype(np.float32), result_to_original, (height, width))
    mask = warp_affine(_feather_mask(result_size, feather), result_to_original, (height, width))
    mask = np.clip(mask, 0.0, 1.0)[:, :, None]
    blended = original.astype(np.float32) * (1.0 - mask) + warped_face * mask
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _feather_mask(size: int, feather: float) -> np.ndarray:
    ramp_width = feather * size
    positions = np.arange(size, dtype=np.float32) + 0.5
    distance_to_edge = np.minimum(positions, size - positions)
    if ramp_width <= 0:
        profile = np.ones(size, dtype=np.float32)
    else:
        profile = np.clip(distance_to_edge / ramp_width, 0.0, 1.0).astype(np.float32)
    return np.minimum(profile[:, None], profile[None, :])


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


def crop_and_resize(image: np.ndarray, output_size: int) -> np.ndarray:
    """Centre-crops to a square and resizes (antialiased) for images that are already aligned."""
    image = _as_rgb_uint8(image)
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(image[top : top + side, left : left + side])
    if side != output_size:
        square = square.resize((output_size, output_size), Image.Resampling.LANCZOS)
    return np.asarray(square)
