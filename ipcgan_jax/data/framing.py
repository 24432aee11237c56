"""The crop layout ("framing") a generator was trained on, for aligning new photos alike.

A run's data config names its faces: the synthetic renderer's layout, or 400x400 crops
of a named alignment template (`face_templates`). The photo tool, the evaluation and the
web page align photos with these settings so that a face reaches the generator framed as
its training faces were.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ipcgan_jax.constants import NUM_AGE_GROUPS
from ipcgan_jax.data import alignment, face_templates, synthetic


@dataclasses.dataclass(frozen=True)
class AlignmentSettings:
    """The crop layout a generator was trained on (see `FaceAligner`): a named template
    (`face_templates.FACE_TEMPLATES`) with its padding and shift."""

    output_size: int = alignment.DEFAULT_OUTPUT_SIZE
    padding: float = face_templates.DEFAULT_PADDING
    vertical_shift: float = face_templates.DEFAULT_VERTICAL_SHIFT
    template: str = face_templates.DEFAULT_TEMPLATE


def synthetic_alignment(size: int) -> AlignmentSettings:
    """The FaceAligner settings whose template best fits the synthetic renderer's faces.

    The padding and shift fitted to the mean canonical landmarks of many rendered
    identities (`face_templates.fit_padding_and_shift`).
    """
    identities = synthetic.sample_identities(256, seed=0)
    groups = np.arange(len(identities)) % NUM_AGE_GROUPS
    points = synthetic.face_landmarks(identities, groups, size=size).mean(axis=0)
    # Pixel centres -> fractions of the side.
    padding, shift = face_templates.fit_padding_and_shift((points + 0.5) / size)
    return AlignmentSettings(output_size=int(size), padding=padding, vertical_shift=shift)


def alignment_for_data(data_config: Any) -> AlignmentSettings:
    """The crop layout implied by a run's data config.

    'synthetic' (in memory): the renderer's layout at data.size; 'synthetic_aging'
    (TFDS): the same at its builder config's size (128, or 64 for 'small_64'); CACD and
    image folders: 400x400 crops of the template named by data.alignment_template
    ("cacd", the builders' default, or "utkface" for UTKFace's chips).
    """
    name = data_config.get("name", "cacd")
    if name == "synthetic":
        return synthetic_alignment(int(data_config.get("size", 128)))
    if name == "synthetic_aging":
        return synthetic_alignment(64 if data_config.get("builder_config") == "small_64" else 128)
    template = data_config.get("alignment_template", face_templates.DEFAULT_TEMPLATE)
    named = face_templates.get_template(template)
    return AlignmentSettings(padding=named.padding, vertical_shift=named.vertical_shift, template=template)
