"""A procedural face-aging dataset with ground truth for every identity at every age group.

Each face is drawn from two independent sets of attributes:

* identity attributes (`IdentityAttributes`, one row per person): head and jaw shape,
  skin tone, eye colour/size/spacing, brows, nose, mouth, lips, hair colour/style/volume,
  forehead height, ears;
* age attributes (`AGE_ATTRIBUTES`, one row per age group 0..4 = 11-20, 21-30, 31-40,
  41-50, 51+): greying of hair and brows, hairline recession, forehead lines, crow's feet,
  nasolabial folds, eye bags, drooping lids, jowls, thinner lips, darker/sallower skin.
  They grow monotonically with the group, so the age group is plainly visible.

Because the two are independent, `render_faces(identities, age_group)` gives the ground
truth of any identity at any group. Per-image nuisance (a small shift/scale/rotation,
lighting direction and colour, background colour, sensor noise) comes from a seed;
`nuisance_seed=None` renders the canonical, nuisance-free image used as ground truth.

Geometry is defined in "canonical" coordinates (u right, v down, in units of the image
side, origin at the image centre); `face_landmarks` returns dlib's 5-point landmarks of
exactly what was drawn, in pixel coordinates with pixel centres at integers (dlib's
convention), order: 0/1 outer/inner corner of the eye on the image's right, 2/3
outer/inner corner of the eye on the image's left, 4 nose base.

Everything is vectorised numpy (float32); features are evaluated only inside the pixel
window that can contain them, which keeps a 128x128 face around a millisecond.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from tqdm import tqdm

from ipcgan_jax.constants import AGE_GROUP_UPPER_AGES, MIN_AGE, NUM_AGE_GROUPS

# Inclusive age ranges in years drawn for each group: IPCGAN's groups, the open-ended last
# one stopping where CACD's ages do.
OLDEST_AGE = 62
AGE_GROUP_YEARS: tuple[tuple[int, int], ...] = tuple(zip(
    (MIN_AGE, *(upper + 1 for upper in AGE_GROUP_UPPER_AGES)), (*AGE_GROUP_UPPER_AGES, OLDEST_AGE)))

# Per-group strength of each age attribute (rows: groups 0..4), all non-decreasing in the
# group except `youth`, which only marks the teenage group. The steps between adjacent
# groups are about even (1.1.0): with 1.0.0's small 11-20 -> 21-30 and 41-50 -> 51+ steps,
# a small classifier at 64x64 confused those neighbours (85% test accuracy).
AGE_ATTRIBUTES: dict[str, tuple[float, ...]] = {
    "greying": (0.0, 0.22, 0.45, 0.68, 0.92),
    "hairline_recession": (0.0, 0.03, 0.06, 0.095, 0.13),
    "forehead_lines": (0.0, 0.28, 0.52, 0.76, 1.0),
    "crows_feet": (0.0, 0.28, 0.52, 0.76, 1.0),
    "nasolabial_folds": (0.05, 0.3, 0.54, 0.77, 1.0),
    "eye_bags": (0.0, 0.28, 0.52, 0.76, 1.0),
    "lid_droop": (0.0, 0.1, 0.2, 0.32, 0.45),
    "sagging": (0.0, 0.22, 0.46, 0.72, 1.0),
    "lip_thinning": (0.0, 0.1, 0.2, 0.3, 0.4),
    "skin_ageing": (0.0, 0.045, 0.09, 0.135, 0.18),
    "age_spots": (0.0, 0.0, 0.2, 0.55, 1.0),
    "youth": (1.0, 0.0, 0.0, 0.0, 0.0),
}

_SKIN_TONES = np.array(  # light -> dark, linear-ish sRGB in [0, 1]
    [[0.96, 0.80, 0.70], [0.90, 0.70, 0.57], [0.78, 0.57, 0.42], [0.62, 0.42, 0.29], [0.42, 0.27, 0.18]],
    dtype=np.float32,
)
_IRIS_COLOURS = np.array(
    [[0.30, 0.18, 0.09], [0.18, 0.11, 0.06], [0.45, 0.35, 0.16], [0.30, 0.45, 0.30],
     [0.30, 0.45, 0.65], [0.45, 0.50, 0.55]],
    dtype=np.float32,
)
_HAIR_COLOURS = np.array(
    [[0.06, 0.05, 0.05], [0.16, 0.10, 0.07], [0.30, 0.19, 0.11], [0.48, 0.34, 0.20],
     [0.80, 0.66, 0.42], [0.55, 0.22, 0.10]],
    dtype=np.float32,
)
_GREY_HAIR = np.array([0.80, 0.79, 0.77], dtype=np.float32)
HAIR_STYLES: tuple[str, ...] = ("short", "side_part", "fringe", "long")


@dataclasses.dataclass(frozen=True)
class IdentityAttributes:
    """Identity attributes, one row per identity (canonical units: fractions of the image side).

    Scalars are (N,) float32; colours are (N, 3) float32 RGB in [0, 1]; hair_style is (N,)
    int32 indexing HAIR_STYLES; texture_phase (N,) seeds the hair strands and age spots.
    """

    face_half_width: np.ndarray
    eye_level: np.ndarray
    chin_depth: np.ndarray
    jaw_squareness: np.ndarray
    skin_rgb: np.ndarray
    eye_spacing: np.ndarray
    eye_half_width: np.ndarray
    eye_openness: np.ndarray
    iris_rgb: np.ndarray
    brow_thickness: np.ndarray
    brow_arch: np.ndarray
    brow_gap: np.ndarray
    nose_length: np.ndarray
    nose_half_width: np.ndarray
    mouth_offset: np.ndarray
    mouth_half_width: np.ndarray
    lip_thickness: np.ndarray
    lip_rgb: np.ndarray
    hair_rgb: np.ndarray
    hair_style: np.ndarray
    hair_volume: np.ndarray
    forehead_height: np.ndarray
    ear_scale: np.ndarray
    texture_phase: np.ndarray

    def __post_init__(self) -> None:
        lengths = {f.name: len(getattr(self, f.name)) for f in dataclasses.fields(self)}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"IdentityAttributes fields have different numbers of rows: {lengths}")

    def __len__(self) -> int:
        return len(self.face_half_width)

    def take(self, indices: np.ndarray) -> "IdentityAttributes":
        """Rows `indices` (any integer array) as a new IdentityAttributes."""
        indices = np.asarray(indices)
        return IdentityAttributes(**{k: v[indices] for k, v in self.as_dict().items()})

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, table: dict[str, np.ndarray], prefix: str = "") -> "IdentityAttributes":
        """Inverse of `as_dict` (keys may carry `prefix`, as in `make_dataset`'s output)."""
        missing = [f.name for f in dataclasses.fields(cls) if prefix + f.name not in table]
        if missing:
            raise KeyError(f"identity attribute table lacks {[prefix + m for m in missing]}")
        return cls(**{f.name: np.asarray(table[prefix + f.name]) for f in dataclasses.fields(cls)})


def sample_identities(num_identities: int, seed: int) -> IdentityAttributes:
    """Draws `num_identities` independent random identities, deterministically from `seed`."""
    if num_identities < 1:
        raise ValueError(f"num_identities must be >= 1, got {num_identities}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1D]))
    n = num_identities

    def uniform(low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, n).astype(np.float32)

    def palette_mix(palette: np.ndarray, jitter: float) -> np.ndarray:
        position = rng.uniform(0, len(palette) - 1, n)
        lower = np.floor(position).astype(int)
        upper = np.minimum(lower + 1, len(palette) - 1)
        fraction = (position - lower)[:, None]
        colour = palette[lower] * (1 - fraction) + palette[upper] * fraction
        colour = colour * rng.uniform(1 - jitter, 1 + jitter, (n, 3))
        return np.clip(colour, 0, 1).astype(np.float32)

    skin_rgb = palette_mix(_SKIN_TONES, 0.04)
    lip_redness = rng.uniform(0.0, 1.0, (n, 1))
    lip_rgb = skin_rgb * np.array([0.82, 0.55, 0.55]) * (1 - 0.15 * lip_redness) + (
        np.array([0.12, 0.0, 0.01]) * lip_redness
    )
    return IdentityAttributes(
        face_half_width=uniform(0.32, 0.365),
        eye_level=uniform(-0.125, -0.095),
        chin_depth=uniform(0.43, 0.48),
        jaw_squareness=uniform(0.0, 0.75),
        skin_rgb=skin_rgb,
        eye_spacing=uniform(0.128, 0.152),
        eye_half_width=uniform(0.047, 0.058),
        eye_openness=uniform(0.36, 0.5),
        iris_rgb=_IRIS_COLOURS[rng.integers(0, len(_IRIS_COLOURS), n)]
        * rng.uniform(0.85, 1.15, (n, 1)).astype(np.float32),
        brow_thickness=uniform(0.008, 0.016),
        brow_arch=uniform(0.004, 0.022),
        brow_gap=uniform(0.05, 0.064),
        nose_length=uniform(0.19, 0.23),
        nose_half_width=uniform(0.034, 0.048),
        mouth_offset=uniform(0.085, 0.105),
        mouth_half_width=uniform(0.065, 0.088),
        lip_thickness=uniform(0.012, 0.02),
        lip_rgb=np.clip(lip_rgb, 0, 1).astype(np.float32),
        hair_rgb=palette_mix(_HAIR_COLOURS, 0.08),
        hair_style=rng.integers(0, len(HAIR_STYLES), n).astype(np.int32),
        hair_volume=uniform(0.012, 0.05),
        forehead_height=uniform(0.19, 0.235),
        ear_scale=uniform(0.85, 1.15),
        texture_phase=uniform(0.0, 2 * math.pi),
    )


def age_attributes(age_group: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image age attribute strengths (each (N,) float32) for integer groups 0..4."""
    age_group = _check_age_group(age_group)
    return {
        name: np.asarray(levels, dtype=np.float32)[age_group] for name, levels in AGE_ATTRIBUTES.items()
    }


# ----------------------------------------------------------------------------- nuisance


@dataclasses.dataclass(frozen=True)
class Nuisance:
    """Per-image nuisance, each field (N,) or (N, 3) float32.

    The face is drawn at canonical coordinates p and shown at `scale * R(rotation) p + shift`.
    """

    shift: np.ndarray  # (N, 2) in image units (u, v)
    scale: np.ndarray
    rotation: np.ndarray  # radians, positive turns the face clockwise on screen
    light: np.ndarray  # (N, 3) unit light direction (u, v, towards viewer)
    ambient: np.ndarray
    gain_rgb: np.ndarray  # (N, 3) brightness times colour tint
    background_rgb: np.ndarray  # (N, 3)
    noise_amplitude: np.ndarray
    noise_seed: np.ndarray  # (N,) uint32


def canonical_nuisance(num_images: int) -> Nuisance:
    """The nuisance-free setting used for ground truth: no jitter, fixed light and background."""
    n = num_images
    light = np.tile(np.array([[0.0, -0.35, 0.94]], np.float32), (n, 1))
    return Nuisance(
        shift=np.zeros((n, 2), np.float32),
        scale=np.ones(n, np.float32),
        rotation=np.zeros(n, np.float32),
        light=light / np.linalg.norm(light, axis=1, keepdims=True),
        ambient=np.full(n, 0.5, np.float32),
        gain_rgb=np.ones((n, 3), np.float32),
        background_rgb=np.tile(np.array([[0.55, 0.58, 0.62]], np.float32), (n, 1)),
        noise_amplitude=np.zeros(n, np.float32),
        noise_seed=np.zeros(n, np.uint32),
    )


def draw_nuisance(image_seeds: np.ndarray) -> Nuisance:
    """Random nuisance, image i drawn only from `image_seeds[i]` (so batching never matters)."""
    image_seeds = np.asarray(image_seeds)
    if image_seeds.ndim != 1 or not np.issubdtype(image_seeds.dtype, np.integer):
        raise ValueError(f"image_seeds must be a 1-D integer array, got {image_seeds.dtype} {image_seeds.shape}")
    # 17 uniforms per image: order fixes the meaning of each column.
    draws = np.stack(
        [np.random.default_rng(np.random.SeedSequence([int(s), 0x5EED])).random(17) for s in image_seeds]
    ) if len(image_seeds) else np.zeros((0, 17))
    draws = draws.astype(np.float32)

    def span(column: slice | int, low: float, high: float) -> np.ndarray:
        return low + (high - low) * draws[:, column]

    light = np.stack([span(5, -0.3, 0.3), span(6, -0.5, -0.2), np.full(len(draws), 0.9, np.float32)], 1)
    # Backgrounds: any hue, mostly muted, never matching the canonical one exactly.
    background = span(slice(11, 14), 0.08, 0.92)
    background = background * 0.7 + background.mean(1, keepdims=True) * 0.3
    return Nuisance(
        shift=span(slice(0, 2), -0.02, 0.02),
        scale=span(2, 0.955, 1.045),
        rotation=span(3, -math.radians(2.5), math.radians(2.5)),
        light=(light / np.linalg.norm(light, axis=1, keepdims=True)).astype(np.float32),
        ambient=span(4, 0.45, 0.58),
        gain_rgb=span(7, 0.85, 1.12)[:, None] * span(slice(8, 11), 0.94, 1.06),
        background_rgb=background.astype(np.float32),
        noise_amplitude=span(14, 0.0, 0.02),
        noise_seed=(draws[:, 15] * 2**31).astype(np.uint32) ^ (draws[:, 16] * 2**16).astype(np.uint32),
    )


def _resolve_nuisance(num_images: int, nuisance_seed: int | np.ndarray | None) -> Nuisance:
    if nuisance_seed is None:
        return canonical_nuisance(num_images)
    seeds = np.asarray(nuisance_seed)
    if seeds.ndim == 0:
        # One seed for the batch: image i gets its own stream derived from (seed, i).
        base = int(seeds)
        seeds = np.array([hash_seed(base, i) for i in range(num_images)], dtype=np.int64)
    if seeds.shape != (num_images,):
        raise ValueError(f"nuisance_seed must be an int or ({num_images},) ints, got shape {seeds.shape}")
    return draw_nuisance(seeds)


def hash_seed(*parts: int) -> int:
    """A 63-bit seed mixing several integers (stable across runs and platforms)."""
    state = np.random.SeedSequence([int(part) % 2**63 for part in parts]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


# ----------------------------------------------------------------------------- geometry


@dataclasses.dataclass(frozen=True)
class _Geometry:
    """Canonical per-image face geometry (all (N,) float32) after applying the age attributes."""

    face_half_width: np.ndarray
    eye_level: np.ndarray
    chin_depth: np.ndarray
    jaw_squareness: np.ndarray
    eye_spacing: np.ndarray
    eye_half_width: np.ndarray
    eye_opening: np.ndarray  # upper-lid height, in units of eye_half_width
    nose_base: np.ndarray  # v of the nose base
    nose_half_width: np.ndarray
    mouth_level: np.ndarray
    mouth_half_width: np.ndarray
    hairline: np.ndarray  # v of the hairline's centre


def _face_geometry(identities: IdentityAttributes, age: dict[str, np.ndarray]) -> _Geometry:
    youth = age["youth"]
    eye_level = identities.eye_level
    nose_base = eye_level + identities.nose_length * (1 - 0.05 * youth)
    return _Geometry(
        face_half_width=identities.face_half_width * (1 + 0.02 * youth),
        eye_level=eye_level,
        chin_depth=identities.chin_depth * (1 - 0.05 * youth + 0.03 * age["sagging"]),
        jaw_squareness=identities.jaw_squareness * (1 - 0.5 * youth),
        eye_spacing=identities.eye_spacing,
        eye_half_width=identities.eye_half_width,
        eye_opening=identities.eye_openness * (1 - 0.45 * age["lid_droop"]) * (1 + 0.1 * youth),
        nose_base=nose_base,
        nose_half_width=identities.nose_half_width * (1 + 0.08 * age["sagging"]),
        mouth_level=nose_base + identities.mouth_offset * (1 - 0.06 * youth) + 0.008 * age["sagging"],
        mouth_half_width=identities.mouth_half_width,
        hairline=eye_level - identities.forehead_height - age["hairline_recession"],
    )


def _canonical_landmarks(geometry: _Geometry) -> np.ndarray:
    ex, ew, ey = geometry.eye_spacing, geometry.eye_half_width, geometry.eye_level
    # Corners sit on the lid line's ends, which the lash line overshoots by a hair.
    u = np.stack([ex + ew, ex - ew, -(ex + ew), -(ex - ew), np.zeros_like(ex)], 1)
    v = np.stack([ey, ey, ey, ey, geometry.nose_base], 1)
    return np.stack([u, v], -1)


def _to_image_points(points: np.ndarray, nuisance: Nuisance, size: int) -> np.ndarray:
    cos, sin = np.cos(nuisance.rotation)[:, None], np.sin(nuisance.rotation)[:, None]
    u, v = points[..., 0], points[..., 1]
    scale = nuisance.scale[:, None]
    image_u = scale * (cos * u - sin * v) + nuisance.shift[:, :1]
    image_v = scale * (sin * u + cos * v) + nuisance.shift[:, 1:]
    return np.stack([(image_u + 0.5) * size - 0.5, (image_v + 0.5) * size - 0.5], -1)


def face_landmarks(
    identities: IdentityAttributes,
    age_group: np.ndarray,
    *,
    size: int = 128,
    nuisance_seed: int | np.ndarray | None = None,
) -> np.ndarray:
    """dlib 5-point landmarks (N, 5, 2) float32 (x, y) of what `render_faces` draws with the same arguments."""
    age_group = _check_age_group(age_group)
    identities = _broadcast_identities(identities, len(age_group))
    geometry = _face_geometry(identities, age_attributes(age_group))
    nuisance = _resolve_nuisance(len(age_group), nuisance_seed)
    return _to_image_points(_canonical_landmarks(geometry), nuisance, size).astype(np.float32)


# ----------------------------------------------------------------------------- drawing helpers
# Images are built channel-first, (N, 3, H, W) float32, because numpy's per-channel loops over
# contiguous planes run several times faster than broadcasting over a trailing RGB axis.


def _coverage(signed_distance: np.ndarray, pixel: np.ndarray | float) -> np.ndarray:
    """Anti-aliased inside-ness (1 inside, 0 outside) of a shape with this signed distance.

    Overwrites and returns `signed_distance` when it is a float32 temporary (callers pass
    fresh expressions): fewer temporaries means far fewer page faults in numpy.
    """
    result = _scratch(signed_distance)
    np.divide(signed_distance, pixel, out=result)
    np.subtract(0.5, result, out=result)
    return np.clip(result, 0.0, 1.0, out=result)


def _line_ink(distance: np.ndarray, half_thickness: np.ndarray | float, pixel: np.ndarray) -> np.ndarray:
    """Soft line profile; lines thinner than a pixel widen to one and fade to keep their ink.

    Overwrites `distance` like `_coverage`.
    """
    width = np.maximum(half_thickness, 0.8 * pixel)
    result = _scratch(distance)
    np.divide(distance, width, out=result)
    np.subtract(1.0, result, out=result)
    np.clip(result, 0.0, 1.0, out=result)
    result *= half_thickness / width
    return result


def _bump(squared_radius: np.ndarray) -> np.ndarray:
    """Smooth compact bump (1 at the centre, 0 beyond radius 1): a cheap stand-in for a Gaussian.

    Overwrites `squared_radius` like `_coverage`.
    """
    result = _scratch(squared_radius)
    np.subtract(1.0, squared_radius, out=result)
    np.clip(result, 0.0, 1.0, out=result)
    result *= result
    return result


def _scratch(array: np.ndarray) -> np.ndarray:
    """`array` itself when it owns a writable float32 buffer (a temporary), else a new one."""
    if array.dtype == np.float32 and array.flags.owndata and array.flags.writeable and array.ndim == 3:
        return array
    return np.empty(np.shape(array), np.float32)


def _ellipse_distance(x: np.ndarray, y: np.ndarray, half_x: np.ndarray | float,
                      half_y: np.ndarray | float) -> np.ndarray:
    """First-order signed distance to an axis-aligned ellipse (F / |grad F|)."""
    qx, qy = x / half_x, y / half_y
    gradient = 2.0 * np.sqrt((qx / half_x) ** 2 + (qy / half_y) ** 2) + 1e-6
    return (qx * qx + qy * qy - 1.0) / gradient


def _column(values: np.ndarray | float) -> np.ndarray:
    """(N,) -> (N, 1, 1) float32 for broadcasting against pixel planes."""
    return np.asarray(values, np.float32)[:, None, None]


def _rgb(colour: np.ndarray, scale: np.ndarray | float = 1.0) -> list[np.ndarray]:
    """Per-channel planes of an (N, 3) or (3,) colour, optionally times a per-pixel `scale`."""
    colour = np.asarray(colour, np.float32)
    if colour.ndim == 1:
        return [colour[channel] * scale for channel in range(3)]
    return [colour[:, channel, None, None] * scale for channel in range(3)]


def _composite(image: np.ndarray, alpha: np.ndarray, colour: list[np.ndarray]) -> None:
    """In place: image = image + alpha * (colour - image), image (N, 3, h, w)."""
    scratch = np.empty(alpha.shape, np.float32)
    for channel in range(3):
        plane = image[:, channel]
        np.subtract(colour[channel], plane, out=scratch)
        scratch *= alpha
        plane += scratch


class _Canvas:
    """Canonical coordinates of every pixel, and pixel windows that bound features."""

    def __init__(self, size: int, nuisance: Nuisance):
        self.size = size
        self.nuisance = nuisance
        centres = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
        cos = _column(np.cos(nuisance.rotation))
        sin = _column(np.sin(nuisance.rotation))
        inverse_scale = _column(1.0 / nuisance.scale)
        x = centres[None, None, :] - _column(nuisance.shift[:, 0])
        y = centres[None, :, None] - _column(nuisance.shift[:, 1])
        self.u = (cos * x + sin * y) * inverse_scale
        self.v = (cos * y - sin * x) * inverse_scale
        self.pixel = inverse_scale / size  # canonical length of one pixel, (N, 1, 1)

    def window(self, u_low: float, u_high: float, v_low: float, v_high: float) -> tuple[slice, slice]:
        """Pixel rows/columns that hold this canonical box in every image of the batch."""
        corners = np.array([[u_low, v_low], [u_low, v_high], [u_high, v_low], [u_high, v_high]], np.float32)
        points = _to_image_points(np.broadcast_to(corners, (len(self.pixel), 4, 2)), self.nuisance, self.size)
        low = np.clip(np.floor(points.reshape(-1, 2).min(0)).astype(int) - 1, 0, self.size)
        high = np.clip(np.ceil(points.reshape(-1, 2).max(0)).astype(int) + 2, 0, self.size)
        return slice(low[1], high[1]), slice(low[0], high[0])

    def coordinates(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        return self.u[:, rows, cols], self.v[:, rows, cols]


def _strand_hash(u: np.ndarray, v: np.ndarray, phase: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Hair strands: a brightness ripple near 1 and a per-strand pseudo-random value in [0, 1)."""
    frequency = min(size, 256) / 3.2  # strands per image side, about three pixels each
    warped = frequency * u + 1.5 * np.sin(19.0 * v + phase) + 0.3 * frequency * v * v
    strand = np.floor(warped)
    random = np.sin(strand * 12.9898 + phase) * 43758.547
    random -= np.floor(random)
    ripple = warped - strand - 0.5
    return 1.0 - 0.5 * ripple * ripple, random


# ----------------------------------------------------------------------------- rendering


def _check_age_group(age_group: np.ndarray) -> np.ndarray:
    age_group = np.asarray(age_group)
    if age_group.ndim == 0:
        age_group = age_group[None]
    if age_group.ndim != 1 or not (np.issubdtype(age_group.dtype, np.integer) or len(age_group) == 0):
        raise ValueError(f"age_group must be a 1-D integer array, got {age_group.dtype} {age_group.shape}")
    if len(age_group) and (age_group.min() < 0 or age_group.max() >= NUM_AGE_GROUPS):
        raise ValueError(f"age_group values must be in 0..{NUM_AGE_GROUPS - 1}, got {np.unique(age_group)}")
    return age_group.astype(np.int64)


def _broadcast_identities(identities: IdentityAttributes, num_images: int) -> IdentityAttributes:
    if len(identities) == num_images:
        return identities
    if len(identities) == 1:
        return identities.take(np.zeros(num_images, dtype=np.int64))
    raise ValueError(f"identities has {len(identities)} rows; expected 1 or {num_images} (one per age_group)")


_RENDER_CHUNK = 8  # images per vectorised pass: keeps the working set in cache


def render_faces(
    identities: IdentityAttributes,
    age_group: np.ndarray,
    *,
    size: int = 128,
    nuisance_seed: int | np.ndarray | None = None,
) -> np.ndarray:
    """Draws faces: uint8 (N, size, size, 3).

    identities: N rows (or 1, broadcast); age_group: (N,) ints in 0..4.
    nuisance_seed: None for the canonical ground truth; an int (image i then uses a stream
    derived from (seed, i)); or (N,) ints, one seed per image.
    """
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")
    age_group = _check_age_group(age_group)
    identities = _broadcast_identities(identities, len(age_group))
    nuisance = _resolve_nuisance(len(age_group), nuisance_seed)
    images = np.empty((len(age_group), size, size, 3), np.uint8)
    for start in range(0, len(age_group), _RENDER_CHUNK):
        chunk = np.arange(start, min(start + _RENDER_CHUNK, len(age_group)))
        images[chunk] = _render_chunk(
            identities.take(chunk), age_group[chunk],
            Nuisance(**{k: v[chunk] for k, v in dataclasses.asdict(nuisance).items()}), size)
    return images


def _render_chunk(identities: IdentityAttributes, age_group: np.ndarray, nuisance: Nuisance,
                  size: int) -> np.ndarray:
    age = age_attributes(age_group)
    geometry = _face_geometry(identities, age)
    canvas = _Canvas(size, nuisance)
    skin = _skin_colour(identities, age)
    gradient = 1.08 - 0.16 * (canvas.v + 0.5)  # a studio backdrop, lighter at the top
    image = np.stack(_rgb(nuisance.background_rgb, gradient), 1)
    hair_rows, hair_cols = _hair_window(canvas, identities, geometry)
    u, v = canvas.coordinates(hair_rows, hair_cols)
    hair_mass = np.zeros_like(canvas.u)
    hair_mass[:, hair_rows, hair_cols] = _hair_mass(u, v, canvas.pixel, identities, geometry, age)
    texture, strand = _strand_hash(u, v, _column(identities.texture_phase), size)
    hair_rgb = [c * texture for c in _hair_colour(identities, age["greying"], strand)]
    rim = 0.64 - 0.2 * (u / _column(geometry.face_half_width + identities.hair_volume)) ** 2
    _composite(image[:, :, hair_rows, hair_cols], hair_mass[:, hair_rows, hair_cols], [c * rim for c in hair_rgb])
    _draw_neck_and_ears(image, canvas, identities, geometry, skin)
    face_mask, shade = _face_mask_and_shading(canvas, geometry, age)
    _shade_eyes(shade, canvas, geometry, age)
    _shade_nose_and_mouth(shade, canvas, geometry)
    _shade_wrinkles(shade, canvas, identities, geometry, age)
    face_rows, face_cols = _face_window(canvas, geometry)
    _composite(image[:, :, face_rows, face_cols], face_mask[:, face_rows, face_cols],
               _rgb(skin, shade[:, face_rows, face_cols]))
    _draw_age_spots(image, canvas, identities, geometry, age, face_mask)
    _draw_eyes(image, canvas, identities, geometry, shade)
    _draw_brows(image, canvas, identities, geometry, age)
    _draw_nose_and_lips(image, canvas, identities, geometry, age, skin, shade)
    _draw_front_hair(image, canvas, identities, geometry, age, face_mask, hair_mass,
                     (hair_rows, hair_cols), hair_rgb)
    _add_noise(image, nuisance)
    image *= (255.0 * nuisance.gain_rgb)[:, :, None, None]
    image += 0.5
    np.clip(image, 0.0, 255.0, out=image)
    return image.astype(np.uint8).transpose(0, 2, 3, 1)


def _skin_colour(identities: IdentityAttributes, age: dict[str, np.ndarray]) -> np.ndarray:
    """(N, 3): skin darkens and turns sallow with age."""
    ageing = age["skin_ageing"][:, None]
    sallow = identities.skin_rgb * np.array([0.9, 0.86, 0.74], np.float32)
    return (identities.skin_rgb + ageing * (sallow - identities.skin_rgb) * 1.5).astype(np.float32)


def _hair_colour(identities: IdentityAttributes, greying: np.ndarray, strand: np.ndarray) -> list[np.ndarray]:
    """Per-channel hair colour: a growing share of strands turns grey as `greying` rises."""
    # Mostly an even blend (strands are near the pixel size), with some strands ahead.
    grey_share = np.clip(_column(greying) * (0.75 + 0.5 * strand), 0.0, 1.0)
    hair = identities.hair_rgb
    return [_column(hair[:, c]) + grey_share * (_GREY_HAIR[c] - _column(hair[:, c])) for c in range(3)]


def _hair_window(canvas: _Canvas, identities: IdentityAttributes, geometry: _Geometry) -> tuple[slice, slice]:
    reach = float((geometry.face_half_width + identities.hair_volume).max()) + 0.04
    return canvas.window(-reach, reach, -0.6, float((geometry.eye_level + _hair_drop(identities)).max()) + 0.02)


def _hair_drop(identities: IdentityAttributes) -> np.ndarray:
    """How far below the eyes the hair falls at the sides, by style."""
    style = identities.hair_style
    return np.select([style == 0, style == 1, style == 2], [-0.03, 0.0, 0.04], 0.6).astype(np.float32)


def _hair_mass(u: np.ndarray, v: np.ndarray, pixel: np.ndarray, identities: IdentityAttributes,
               geometry: _Geometry, age: dict[str, np.ndarray]) -> np.ndarray:
    """Coverage of the hair volume around the head, drawn behind the face."""
    # Receding hair also thins: the volume above the head shrinks.
    volume = identities.hair_volume * (1 - 5.0 * age["hairline_recession"])
    half_x = _column(geometry.face_half_width + volume + np.where(identities.hair_style == 3, 0.025, 0.0))
    above_eyes = np.minimum(v - _column(geometry.eye_level), 0.0)
    mass = _coverage(_ellipse_distance(u, above_eyes, half_x, _column(0.52 + volume)), pixel)
    return mass * _coverage(v - _column(geometry.eye_level + _hair_drop(identities)), pixel + 0.01)


def _draw_neck_and_ears(image: np.ndarray, canvas: _Canvas, identities: IdentityAttributes,
                        geometry: _Geometry, skin: np.ndarray) -> None:
    pixel = canvas.pixel
    eye_level = _column(geometry.eye_level)
    chin = _column(geometry.eye_level + geometry.chin_depth)
    rows, cols = canvas.window(-0.3, 0.3, float((geometry.eye_level + 0.15).min()), 0.8)
    u, v = canvas.coordinates(rows, cols)
    neck_half = _column(geometry.face_half_width * 0.6)
    neck = _coverage(np.abs(u) - neck_half - 0.02 * (v - eye_level), pixel) * _coverage(eye_level + 0.15 - v, pixel)
    # The jaw casts a shadow that fades down the neck; the sides turn away from the light.
    shade = (0.5 + 0.25 * np.clip((v - chin) / 0.12, 0.0, 1.0)) * (1 - 0.3 * (u / neck_half) ** 2)
    _composite(image[:, :, rows, cols], neck, _rgb(skin, shade))

    ear_u = geometry.face_half_width * 0.97
    ear_v = geometry.eye_level + 0.08
    ear_half = 0.085 * identities.ear_scale
    reach = float((ear_u + 0.06).max())
    rows, cols = canvas.window(-reach, reach, float((ear_v - ear_half).min()), float((ear_v + ear_half).max()))
    u, v = canvas.coordinates(rows, cols)
    x = np.abs(u) - _column(ear_u)
    y = v - _column(ear_v)
    ear_scale = _column(identities.ear_scale)
    ear = _coverage(_ellipse_distance(x, y, 0.042 * ear_scale, _column(ear_half)), pixel)
    ear *= _column(identities.hair_style != 3)  # long hair hides the ears
    shade = 0.75 - 0.3 * _bump((x / (0.022 * ear_scale)) ** 2 + (y / (0.05 * ear_scale)) ** 2)
    _composite(image[:, :, rows, cols], ear, _rgb(skin, shade))


def _face_window(canvas: _Canvas, geometry: _Geometry) -> tuple[slice, slice]:
    reach = float(geometry.face_half_width.max()) * 1.1
    return canvas.window(-reach, reach, -0.6, float((geometry.eye_level + geometry.chin_depth).max()) + 0.01)


def _face_mask_and_shading(canvas: _Canvas, geometry: _Geometry,
                           age: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Face coverage and Lambertian shading of an ellipsoid-like head, both (N, S, S), zero outside the face window."""
    rows, cols = _face_window(canvas, geometry)
    u, v = canvas.coordinates(rows, cols)
    half_width = _column(geometry.face_half_width)
    depth = _column(geometry.chin_depth)
    below = v - _column(geometry.eye_level)
    lower = (below > 0).astype(np.float32)
    # Above the eyes an ellipse of half-height 0.5; below, the half-width follows
    # sqrt(1 - t^2 - s (t^4 - t^2)) with s the jaw's squareness, and jowls widen it with age.
    inverse_height = 2.0 + lower * (1.0 / depth - 2.0)
    t = below * inverse_height
    t2 = t * t
    square = _column(geometry.jaw_squareness) * lower
    profile = t2 + square * (t2 * t2 - t2)
    profile_slope = (2.0 * t + square * (4.0 * t2 * t - 2.0 * t)) * inverse_height
    jowl = 1.0 + 0.08 * _column(age["sagging"]) * lower * _bump(((t - 0.8) / 0.25) ** 2)
    x = u / (half_width * jowl)
    implicit = x * x + profile - 1.0
    gradient = np.sqrt((2.0 * x / (half_width * jowl)) ** 2 + profile_slope * profile_slope) + 1e-6
    mask = np.zeros_like(canvas.u)
    mask[:, rows, cols] = _coverage(implicit / gradient, canvas.pixel)

    light = canvas.nuisance.light
    normal_z = np.sqrt(np.clip(1.0 - x * x - 0.5 * profile, 0.03, 1.0))
    lambert = x * _column(light[:, 0]) + (0.6 * t) * _column(light[:, 1]) + normal_z * _column(light[:, 2])
    ambient = _column(canvas.nuisance.ambient)
    shade = np.zeros_like(canvas.u)
    shade[:, rows, cols] = ambient + (1.1 * (1.0 - ambient)) * np.clip(lambert, 0.0, 1.0)
    return mask, shade


def _shade_eyes(shade: np.ndarray, canvas: _Canvas, geometry: _Geometry, age: dict[str, np.ndarray]) -> None:
    ex, ew, ey = geometry.eye_spacing, geometry.eye_half_width, geometry.eye_level
    # The window holds every bump below: 2.6 half-widths above the eye line, 3.1 below.
    reach = float((ex + 2.2 * ew).max())
    rows, cols = canvas.window(-reach, reach, float((ey - 2.6 * ew).min()), float((ey + 3.1 * ew).max()))
    u, v = canvas.coordinates(rows, cols)
    pixel = canvas.pixel
    ex, ew, ey = _column(ex), _column(ew), _column(ey)
    x = (np.abs(u) - ex) / ew
    y = (v - ey) / ew
    region = shade[:, rows, cols]
    # Eye sockets under the brow ridge; the ridge and the cheekbones catch the light.
    region -= 0.24 * _bump(((x + 0.2) / 1.75) ** 2 + ((y + 0.35) / 1.2) ** 2)
    region += 0.06 * _bump((x / 1.9) ** 2 + ((y + 1.95) / 0.6) ** 2)
    region += 0.06 * _bump(((x - 0.3) / 1.6) ** 2 + ((y - 2.3) / 0.7) ** 2)
    region += 0.08 * _bump((u / 0.02) ** 2 + ((v - ey + 0.01) / 0.05) ** 2)  # nose bridge
    opening = _column(geometry.eye_opening)
    # Eye bags: a dark crescent and a fold line under each eye.
    bags = _column(age["eye_bags"])
    lower_lid = 0.72 * opening * np.clip(1 - x * x, 0.0, None)
    region -= 0.24 * bags * _bump((x / 1.05) ** 2) * _bump(((y - lower_lid - 0.5) / 0.38) ** 2)
    fold = _line_ink(np.abs(y - 0.95 - 0.5 * opening - 0.25 * x * x) * ew, 0.0045, pixel)
    region -= 0.35 * bags * fold * _bump((x / 1.0) ** 2)
    # Upper-lid crease, lower (hooded) as the lid droops.
    droop = _column(age["lid_droop"])
    crease_y = -(opening + 0.4 - 0.3 * droop) * (1 - 0.8 * x * x)
    crease = _line_ink(np.abs(y - crease_y) * ew, 0.0035, pixel)
    region -= (0.14 + 0.25 * droop) * crease * _bump((x / 1.05) ** 2)


def _shade_nose_and_mouth(shade: np.ndarray, canvas: _Canvas, geometry: _Geometry) -> None:
    ey, nb, nw = geometry.eye_level, geometry.nose_base, geometry.nose_half_width
    mouth_v, mouth_w = geometry.mouth_level, geometry.mouth_half_width
    reach = float(np.maximum(mouth_w * 1.1 + 0.01, nw + 0.05).max())
    rows, cols = canvas.window(-reach, reach, float(ey.min()), float((mouth_v + 0.13).max()))
    u, v = canvas.coordinates(rows, cols)
    region = shade[:, rows, cols]
    ey, nb, nw = _column(ey), _column(nb), _column(nw)
    mouth_v, mouth_w = _column(mouth_v), _column(mouth_w)
    au = np.abs(u)
    s = (v - ey) / (nb - ey)  # 0 at the eyes, 1 at the nose base
    along = np.clip(s, 0.0, 1.0)
    # Nose: shadowed side walls, lit bridge and tip, dark wings and underside.
    side_u = 0.016 + (0.75 * nw - 0.016) * along * along
    region -= 0.22 * _bump(((au - side_u - 0.012) / 0.016) ** 2) * _bump(((s - 0.62) / 0.5) ** 2)
    region += 0.1 * _bump((u / 0.014) ** 2 + ((s - 0.5) / 0.45) ** 2)
    region += 0.12 * _bump((u / 0.026) ** 2 + ((v - nb + 0.03) / 0.024) ** 2)
    region -= 0.24 * _bump(((au - nw * 0.95) / 0.018) ** 2 + ((v - nb + 0.014) / 0.018) ** 2)
    region -= 0.32 * _bump((u / (nw * 1.05)) ** 2 + ((v - nb - 0.006) / 0.011) ** 2)
    # Philtrum, shadows above and below the lips, chin highlight.
    to_mouth = v - mouth_v
    region -= 0.06 * _bump(((au - 0.009) / 0.006) ** 2 + ((v - (nb + mouth_v) / 2) / ((mouth_v - nb) / 2)) ** 2)
    region -= 0.1 * _bump((u / (mouth_w * 1.1)) ** 2 + ((to_mouth + 0.005) / 0.03) ** 2)
    region -= 0.18 * _bump((u / (mouth_w * 0.7)) ** 2 + ((to_mouth - 0.045) / 0.014) ** 2)
    region += 0.05 * _bump((u / 0.05) ** 2 + ((to_mouth - 0.09) / 0.03) ** 2)


def _shade_wrinkles(shade: np.ndarray, canvas: _Canvas, identities: IdentityAttributes,
                    geometry: _Geometry, age: dict[str, np.ndarray]) -> None:
    pixel = canvas.pixel
    ey, ex, ew = geometry.eye_level, geometry.eye_spacing, geometry.eye_half_width

    # Forehead lines: up to four waves, each appearing in turn as the strength grows.
    lines = age["forehead_lines"]
    if lines.max() > 0:
        top = np.minimum(geometry.hairline - 0.01, ey - identities.brow_gap - 0.15)
        rows, cols = canvas.window(-0.3, 0.3, float(top.min()), float((ey - 0.01).max()))
        u, v = canvas.coordinates(rows, cols)
        region = shade[:, rows, cols]
        span = _bump((u / (0.6 * _column(geometry.face_half_width))) ** 2)
        base = _column(ey - identities.brow_gap - 0.045)
        phase = _column(identities.texture_phase)
        for index in range(4):
            strength = _column(np.clip(lines * 4.0 - index, 0.0, 1.0)) * span
            centre = base - 0.027 * index + 0.004 * np.sin(26.0 * u + phase + 1.7 * index)
            region -= 0.32 * strength * _line_ink(np.abs(v - centre), 0.0035, pixel)
            region += 0.08 * strength * _line_ink(np.abs(v - centre - 0.0065), 0.003, pixel)
        # Frown lines between the brows.
        frown = _column(np.clip(lines * 2.0 - 0.6, 0.0, 1.0))
        vertical = _bump(((v - _column(ey - 0.045)) / 0.03) ** 2)
        region -= 0.3 * frown * vertical * _line_ink(np.abs(np.abs(u) - 0.013), 0.003, pixel)

    # Crow's feet: three short rays from each outer eye corner.
    crows = age["crows_feet"]
    if crows.max() > 0:
        reach = float((ex + ew + 0.06).max())
        rows, cols = canvas.window(-reach, reach, float((ey - 0.05).min()), float((ey + 0.05).max()))
        u, v = canvas.coordinates(rows, cols)
        region = shade[:, rows, cols]
        du = np.abs(u) - _column(ex + ew + 0.006)
        dv = v - _column(ey)
        for angle in (-0.45, 0.0, 0.45):
            along = du * math.cos(angle) + dv * math.sin(angle)
            across = np.abs(dv * math.cos(angle) - du * math.sin(angle))
            extent = _bump(((along - 0.026) / 0.024) ** 2)
            region -= 0.34 * _column(crows) * extent * _line_ink(across, 0.003, pixel)

    # Nasolabial folds from the nose wings past the mouth corners; marionette lines and jowls.
    folds, sag = _column(age["nasolabial_folds"]), _column(age["sagging"])
    nb, nw = geometry.nose_base, geometry.nose_half_width
    mouth_v, mouth_w = geometry.mouth_level, geometry.mouth_half_width
    reach = float((geometry.face_half_width * 0.8 + 0.06).max())
    rows, cols = canvas.window(-reach, reach, float((nb - 0.035).min()), float((mouth_v + 0.12).max()))
    u, v = canvas.coordinates(rows, cols)
    region = shade[:, rows, cols]
    au = np.abs(u)
    nb, nw, mouth_v, mouth_w = _column(nb), _column(nw), _column(mouth_v), _column(mouth_w)
    start_v, end_v = nb - 0.025, mouth_v + 0.035
    s = np.clip((v - start_v) / (end_v - start_v), 0.0, 1.0)
    fold_u = nw + 0.014 + (mouth_w - nw) * s + 0.014 * np.sin(math.pi * s)
    inside = _bump(((v - (start_v + end_v) / 2) / ((end_v - start_v) / 2)) ** 2)
    region -= (0.1 + 0.32 * folds) * inside * _line_ink(np.abs(au - fold_u), 0.003 + 0.003 * folds, pixel)
    region += 0.07 * folds * inside * _bump(((au - fold_u - 0.018) / 0.014) ** 2)
    marionette_u = mouth_w + 0.004 + 0.012 * np.clip((v - mouth_v) / 0.07, 0.0, 1.0)
    down = _bump(((v - mouth_v - 0.04) / 0.04) ** 2)
    region -= 0.32 * sag * down * _line_ink(np.abs(au - marionette_u), 0.0035, pixel)
    jowl = _bump(((au - 0.8 * _column(geometry.face_half_width)) / 0.06) ** 2 + ((v - mouth_v - 0.05) / 0.06) ** 2)
    region -= 0.14 * sag * jowl


def _draw_age_spots(image: np.ndarray, canvas: _Canvas, identities: IdentityAttributes,
                    geometry: _Geometry, age: dict[str, np.ndarray], face_mask: np.ndarray) -> None:
    spots = age["age_spots"]
    if spots.max() <= 0:
        return
    rows, cols = canvas.window(-0.3, 0.3, float(geometry.hairline.min()), float(geometry.eye_level.max()))
    u, v = canvas.coordinates(rows, cols)
    phase = _column(identities.texture_phase)
    # Sparse peaks of a product of incommensurate waves: a fixed spot pattern per identity.
    field = np.sin(61.0 * u + phase) * np.sin(53.0 * v + 2.3 * phase) * np.sin(37.0 * (u + v) + 0.7 * phase)
    # Spots only on the forehead band, whatever the window.
    centre = _column((geometry.hairline + geometry.eye_level) / 2)
    band = _bump(((v - centre) / _column((geometry.eye_level - geometry.hairline) / 2)) ** 2)
    spot = np.clip((field - 0.8) * 8.0, 0.0, 1.0) * band * (0.3 * _column(spots)) * face_mask[:, rows, cols]
    region = image[:, :, rows, cols]
    _composite(region, spot, [region[:, c] * factor for c, factor in enumerate((0.8, 0.68, 0.55))])


def _draw_eyes(image: np.ndarray, canvas: _Canvas, identities: IdentityAttributes,
               geometry: _Geometry, shade: np.ndarray) -> None:
    ex, ew, ey = geometry.eye_spacing, geometry.eye_half_width, geometry.eye_level
    reach = float((ex + 1.25 * ew).max())
    rows, cols = canvas.window(-reach, reach, float((ey - ew).min()), float((ey + ew).max()))
    u, v = canvas.coordinates(rows, cols)
    pixel = canvas.pixel
    region = image[:, :, rows, cols]
    ex, ew, ey = _column(ex), _column(ew), _column(ey)
    x = (np.abs(u) - ex) / ew
    y = (v - ey) / ew
    opening = _column(geometry.eye_opening)
    taper = np.clip(1.0 - x * x, 0.0, None)
    upper = -opening * taper * (1 + 0.12 * x)
    lower = 0.72 * opening * taper
    # Distance to the almond in canonical units (the vertical distance is close enough).
    almond = np.maximum(np.maximum(upper - y, y - lower), np.abs(x) - 1.0) * ew
    eye = _coverage(almond, pixel)
    sclera_light = (0.62 + 0.3 * taper) * np.clip(shade[:, rows, cols], 0.5, 1.05)
    _composite(region, eye, _rgb(np.array([0.9, 0.87, 0.84]), sclera_light))
    distance = np.sqrt(x * x + (y + 0.05) ** 2)
    iris = eye * _coverage((distance - 0.5) * ew, pixel)
    _composite(region, iris, _rgb(identities.iris_rgb, 1.0 - 2.2 * distance * distance))
    _composite(region, eye * _coverage((distance - 0.2) * ew, pixel), _rgb(np.array([0.03, 0.02, 0.02])))
    glint = eye * _coverage((np.sqrt((x + 0.18) ** 2 + (y + 0.2) ** 2) - 0.08) * ew, pixel)
    _composite(region, 0.85 * glint, _rgb(np.array([1.0, 1.0, 1.0])))
    # Upper lash line (overshooting the outer corner a little) and a faint lower lid line.
    lash = _line_ink(np.abs(y - upper) * ew, 0.006, pixel) * np.sqrt(_bump((x / 1.12) ** 2))
    _composite(region, 0.92 * lash, _rgb(np.array([0.07, 0.05, 0.04])))
    lower_line = _line_ink(np.abs(y - lower - 0.04) * ew, 0.003, pixel) * _bump(x * x)
    _composite(region, 0.35 * lower_line, _rgb(np.array([0.25, 0.15, 0.12])))


def _draw_brows(image: np.ndarray, canvas: _Canvas, identities: IdentityAttributes,
                geometry: _Geometry, age: dict[str, np.ndarray]) -> None:
    ex, ew, ey = geometry.eye_spacing, geometry.eye_half_width, geometry.eye_level
    reach = float((ex + 1.4 * ew).max())
    brow_level = ey - identities.brow_gap
    rows, cols = canvas.window(-reach, reach, float((brow_level - identities.brow_arch - 0.03).min()),
                               float((brow_level + 0.03).max()))
    u, v = canvas.coordinates(rows, cols)
    x = (np.abs(u) - _column(ex + 0.006)) / _column(1.3 * ew)  # -1 inner end, +1 outer end
    centre = _column(brow_level) - _column(identities.brow_arch) * (1 - x * x) + 0.012 * np.clip(x, 0, None) ** 2
    thickness = _column(identities.brow_thickness) * (1.0 - 0.35 * x) * np.sqrt(np.clip(1.0 - x * x, 0.0, 1.0))
    brow = _coverage(np.abs(v - centre) - thickness, canvas.pixel) * (np.abs(x) < 1.0)
    texture, strand = _strand_hash(u * 0.5 + v, v, _column(identities.texture_phase), canvas.size)
    colour = _hair_colour(identities, 0.8 * age["greying"], strand)
    _composite(image[:, :, rows, cols], 0.93 * brow, [c * texture * 0.6 for c in colour])


def _draw_nose_and_lips(image: np.ndarray, canvas: _Canvas, identities: IdentityAttributes,
                        geometry: _Geometry, age: dict[str, np.ndarray], skin: np.ndarray,
                        shade: np.ndarray) -> None:
    pixel = canvas.pixel
    nb, nw = geometry.nose_base, geometry.nose_half_width
    reach = float(nw.max()) + 0.01
    rows, cols = canvas.window(-reach, reach, float((nb - 0.03).min()), float((nb + 0.01).max()))
    u, v = canvas.coordinates(rows, cols)
    nostril = _coverage(_ellipse_distance(np.abs(u) - _column(0.5 * nw), v - _column(nb - 0.008),
                                          _column(0.33 * nw), 0.0085), pixel)
    _composite(image[:, :, rows, cols], 0.8 * nostril, _rgb(skin * 0.25))

    mouth_v, mouth_w = geometry.mouth_level, geometry.mouth_half_width
    thickness = identities.lip_thickness * (1 - age["lip_thinning"])
    reach = float(mouth_w.max()) + 0.01
    rows, cols = canvas.window(-reach, reach, float((mouth_v - thickness - 0.02).min()),
                               float((mouth_v + 1.4 * thickness + 0.03).max()))
    u, v = canvas.coordinates(rows, cols)
    region = image[:, :, rows, cols]
    x = u / _column(mouth_w)
    taper = np.clip(1.0 - x * x, 0.0, None)
    thickness = _column(thickness)
    # Mouth corners turn down with age (sagging), up a little in youth.
    line = _column(mouth_v) + _column(0.012 * age["sagging"] - 0.006 * age["youth"]) * x * x
    bow = 1.0 - 0.35 * _bump((x / 0.22) ** 2) + 0.15 * _bump(((np.abs(x) - 0.25) / 0.2) ** 2)
    upper_edge = line - thickness * taper ** 0.7 * bow
    lower_edge = line + 1.35 * thickness * taper ** 0.6
    beyond_corners = (np.abs(x) - 1.0) * _column(mouth_w)
    upper_lip = _coverage(np.maximum(np.maximum(upper_edge - v, v - line), beyond_corners), pixel)
    lower_lip = _coverage(np.maximum(np.maximum(line - v, v - lower_edge), beyond_corners), pixel)
    light = shade[:, rows, cols]
    _composite(region, 0.9 * upper_lip, _rgb(identities.lip_rgb, 0.82 * light))
    relief = 1.0 + 0.18 * _bump(((v - (line + lower_edge) / 2) / (0.6 * thickness)) ** 2 + x * x)
    _composite(region, 0.9 * lower_lip, _rgb(identities.lip_rgb, light * relief))
    seam = _line_ink(np.abs(v - line), 0.0035, pixel) * np.sqrt(_bump((x / 1.08) ** 2))
    _composite(region, 0.85 * seam, _rgb(identities.lip_rgb * 0.3))


def _draw_front_hair(image: np.ndarray, canvas: _Canvas, identities: IdentityAttributes,
                     geometry: _Geometry, age: dict[str, np.ndarray], face_mask: np.ndarray,
                     hair_mass: np.ndarray, hair_window: tuple[slice, slice],
                     hair_rgb: list[np.ndarray]) -> None:
    """Hair over the forehead: all of the head above the (receding) hairline."""
    # hair_rgb covers hair_window; the forehead hair lies in its upper rows.
    hair_rows, cols = hair_window
    last_row = canvas.window(-0.5, 0.5, -0.6, float((geometry.hairline + 0.17).max()))[0].stop
    rows = slice(hair_rows.start, max(hair_rows.start, min(hair_rows.stop, last_row)))
    planes = slice(0, rows.stop - rows.start)
    u, v = canvas.coordinates(rows, cols)
    pixel = canvas.pixel
    style = identities.hair_style
    x = u / _column(geometry.face_half_width)
    recession = _column(age["hairline_recession"])
    # Temples recede faster than the centre: an M-shaped hairline in later groups.
    hairline = _column(geometry.hairline) + (0.06 - 2.0 * recession) * x * x
    hairline = hairline + _column(style == 2) * (0.075 - 0.05 * x * x + 0.004 * np.sin(70.0 * u))
    hairline = hairline + _column(style == 1) * 0.03 * x
    covered = _coverage(v - hairline, pixel + 0.006)
    face = face_mask[:, rows, cols]
    alpha = covered * np.maximum(face, hair_mass[:, rows, cols])
    shadow = 1.0 - 0.3 * np.clip((v - hairline + 0.03) / 0.03, 0.0, 1.0)
    region = image[:, :, rows, cols]
    _composite(region, alpha, [c[:, planes] * shadow * 0.9 for c in hair_rgb])
    # The hair shades the skin just below the hairline.
    region *= (1.0 - 0.15 * _bump(((v - hairline - 0.012) / 0.016) ** 2) * face * (1.0 - covered))[:, None]


def _add_noise(image: np.ndarray, nuisance: Nuisance) -> None:
    for index in np.flatnonzero(nuisance.noise_amplitude > 0):
        rng = np.random.default_rng(int(nuisance.noise_seed[index]))
        noise = rng.random(image.shape[2:], dtype=np.float32) - 0.5
        image[index] += (2.0 * nuisance.noise_amplitude[index]) * noise[None]


# ----------------------------------------------------------------------------- datasets


def plan_dataset(num_identities: int, images_per_identity: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Labels of `make_dataset`'s images without drawing them, each (N,) with N = ids * images.

    Image k of identity i is row i * images_per_identity + k. Identity i sees the groups
    (start_i + k) mod 5 with the starts spread evenly over identities, so every identity
    appears at min(images_per_identity, 5) groups and the groups are balanced overall.
    Keys: identity, age_group, age (whole years within the group), nuisance_seed.
    """
    if num_identities < 1 or images_per_identity < 1:
        raise ValueError(f"num_identities and images_per_identity must be >= 1, got "
                         f"{num_identities} and {images_per_identity}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xDA7A]))
    start = rng.permutation(num_identities) % NUM_AGE_GROUPS
    identity = np.repeat(np.arange(num_identities), images_per_identity)
    age_group = (start[identity] + np.tile(np.arange(images_per_identity), num_identities)) % NUM_AGE_GROUPS
    low, high = np.array(AGE_GROUP_YEARS).T
    age = rng.integers(low[age_group], high[age_group] + 1)
    nuisance_seed = np.array([hash_seed(seed, index) for index in range(len(identity))], np.int64)
    return {"identity": identity.astype(np.int32), "age_group": age_group.astype(np.int32),
            "age": age.astype(np.int32), "nuisance_seed": nuisance_seed}


def make_dataset(
    num_identities: int,
    images_per_identity: int,
    *,
    size: int = 128,
    seed: int = 0,
    show_progress: bool = False,
) -> dict[str, np.ndarray]:
    """A whole synthetic aging set in memory.

    Returns image (N, size, size, 3) uint8 (with nuisance), age, age_group, identity (N,)
    int32, nuisance_seed (N,), and the identity attribute table as
    "identity_attributes/<field>" arrays with one row per identity
    (`IdentityAttributes.from_dict(d, "identity_attributes/")` rebuilds it).
    """
    identities = sample_identities(num_identities, seed)
    plan = plan_dataset(num_identities, images_per_identity, seed=seed)
    images = np.empty((len(plan["identity"]), size, size, 3), np.uint8)
    for start, stop in _progress_chunks(len(images), 256, show_progress, "synthetic faces"):
        rows = slice(start, stop)
        images[rows] = render_faces(identities.take(plan["identity"][rows]), plan["age_group"][rows],
                                    size=size, nuisance_seed=plan["nuisance_seed"][rows])
    table = {f"identity_attributes/{name}": value for name, value in identities.as_dict().items()}
    return {"image": images, **plan, **table}


def _progress_chunks(total: int, chunk: int, show_progress: bool, description: str) -> list[tuple[int, int]]:
    bounds = [(start, min(start + chunk, total)) for start in range(0, total, chunk)]
    if not show_progress:
        return bounds
    return tqdm(bounds, desc=description, unit="chunk")
