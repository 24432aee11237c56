"""An independent identity judge: dlib's ResNet face-recognition model.

dlib's `dlib_face_recognition_resnet_model_v1` (shipped offline, with its weights, by
the `face_recognition_models` package) maps a face chip to a 128-d descriptor; dlib
documents that two descriptors closer than 0.6 (euclidean) belong to the same person
(99.38% on LFW). It was trained on neither CACD nor this project's faces, and shares no
weights with the AlexNet the GAN's identity loss uses, so it grades identity
preservation independently.

Faces here are already aligned crops (dataset images or generator outputs), so no
detector runs: the 5-point landmark model (`shape_predictor_5_face_landmarks`) is given
the box the crop layout puts the face in, and dlib cuts its 150x150 chip from the
landmarks it finds (`compute_face_descriptor`). Every image of one layout gets the same
box, so inputs and outputs are treated alike.
"""
from __future__ import annotations

import numpy as np

from ipcgan_jax.data.alignment import import_dlib

VERIFICATION_THRESHOLD = 0.6  # dlib's documented same-person distance
DESCRIPTOR_SIZE = 128


def layout_face_box(size: int, padding: float, vertical_shift: float) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the face in an aligned crop of side `size`.

    The aligner's template puts dlib's mean face (which spans the unit square, as the
    detector box does) at [p, 1 + p] / (1 + 2p), shifted down by `vertical_shift`."""
    low, high = padding / (1 + 2 * padding), (1 + padding) / (1 + 2 * padding)
    shift = vertical_shift * size
    return (int(round(low * size)), int(round(low * size + shift)),
            int(round(high * size)) - 1, int(round(high * size + shift)) - 1)


class FaceEmbedder:
    """128-d dlib face descriptors of aligned crops of one layout.

    Args:
      padding, vertical_shift: the crop layout (`ipcgan_jax.data.framing.AlignmentSettings`).
      recognition_model, landmark_model: file paths; None uses face_recognition_models'.
    """

    def __init__(self, padding: float, vertical_shift: float, *, recognition_model: str | None = None,
                 landmark_model: str | None = None):
        self.padding = float(padding)
        self.vertical_shift = float(vertical_shift)
        self._dlib, models = import_dlib()
        self._recogniser = self._dlib.face_recognition_model_v1(
            recognition_model or models.face_recognition_model_location())
        self._predictor = self._dlib.shape_predictor(
            landmark_model or models.pose_predictor_five_point_model_location())

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 aligned crops -> (N, 128) float32 descriptors."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or images.shape[1] != images.shape[2]:
            raise ValueError(f"expected (N, S, S, 3) uint8 square crops, got {images.dtype} {images.shape}")
        box = self._dlib.rectangle(*layout_face_box(images.shape[1], self.padding, self.vertical_shift))
        descriptors = np.empty((len(images), DESCRIPTOR_SIZE), np.float32)
        for i, image in enumerate(images):
            image = np.ascontiguousarray(image)
            shape = self._predictor(image, box)
            descriptors[i] = np.asarray(self._recogniser.compute_face_descriptor(image, shape, 0))
        return descriptors


def descriptor_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between matching rows of (N, D) descriptors."""
    return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity between matching rows of (N, D) descriptors."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.sum(a * b, axis=-1) / np.maximum(norms, 1e-12)
