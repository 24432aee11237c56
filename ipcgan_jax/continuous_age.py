"""Ages in years as generator conditions: the blend of the two nearest age groups.

IPCGAN's condition is five one-hot maps, one per age group. An age between two group
centres (`constants.AGE_GROUP_CENTRES`) becomes a linear blend of those two groups' maps;
the generator was trained on one-hot maps only, so a blend is an input it never saw
(README, "Continuous ages": what the independent evaluator measures of it).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ipcgan_jax.constants import AGE_GROUP_CENTRES, MAX_REQUESTED_AGE, MIN_AGE


def check_requested_ages(ages: float | Sequence[float]) -> tuple[float, ...]:
    """Requested ages in years as a non-empty tuple; ValueError unless every one is a
    finite number in MIN_AGE..MAX_REQUESTED_AGE."""
    values = tuple(float(a) for a in np.atleast_1d(np.asarray(ages, dtype=np.float64)))
    bad = [a for a in values if not (np.isfinite(a) and MIN_AGE <= a <= MAX_REQUESTED_AGE)]
    if bad or not values:
        raise ValueError(f"ages must be a non-empty list of years in {MIN_AGE}..{MAX_REQUESTED_AGE}, "
                         f"got {list(values)}")
    return values


def age_condition(ages: float | Sequence[float]) -> np.ndarray:
    """Condition weights (len(ages), NUM_AGE_GROUPS) float32 for ages in years.

    An age between two group centres (`constants.AGE_GROUP_CENTRES`: 15.5, 25.5, ...,
    55.5) weights those two groups linearly (37 -> 0.85 of 31-40, 0.15 of 41-50); at or
    beyond the first or last centre it is that group's one-hot row, so 15 and 60 give
    exactly the 11-20 and 51+ outputs. The generator was trained on one-hot maps only:
    a blend is an input it never saw, and nothing makes its output the face of that
    exact age (README, "Continuous ages": what the evaluator measures)."""
    ages = np.clip(np.asarray(check_requested_ages(ages)), AGE_GROUP_CENTRES[0], AGE_GROUP_CENTRES[-1])
    centres = np.asarray(AGE_GROUP_CENTRES)
    upper = np.clip(np.searchsorted(centres, ages, side="right"), 1, len(centres) - 1)
    fraction = (ages - centres[upper - 1]) / (centres[upper] - centres[upper - 1])
    weights = np.zeros((len(ages), len(centres)), np.float32)
    rows = np.arange(len(ages))
    weights[rows, upper - 1] = 1.0 - fraction
    weights[rows, upper] += fraction
    return weights


def progression_ages(num_frames: int) -> tuple[float, ...]:
    """`num_frames` (>= 2) evenly spaced ages from the first group centre to the last
    (15.5 ... 55.5): an ageing animation from exactly the 11-20 output to exactly the
    51+ output through the blends between them."""
    if int(num_frames) != num_frames or num_frames < 2:
        raise ValueError(f"a progression needs at least 2 frames, got {num_frames}")
    return tuple(float(a) for a in np.linspace(AGE_GROUP_CENTRES[0], AGE_GROUP_CENTRES[-1], int(num_frames)))


def age_label(age: float) -> str:
    """How an age in years is written in file names and titles: 37 -> '37y', 37.5 -> '37.5y'."""
    return f"{age:g}y"
