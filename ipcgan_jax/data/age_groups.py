"""Age -> age group, as in IPCGAN (docs/faithfulness.md §2): 11-20, 21-30, 31-40, 41-50, 51+.

Each boundary is the inclusive upper age of a group; the last group is open-ended.
The defaults are IPCGAN's (`constants.AGE_GROUP_UPPER_AGES`, `constants.MIN_AGE`).
Ages below `min_age` (11 by default) belong to no group: the model never saw children,
so the builders drop such images and count them in their skip report instead of filing
a 5-year-old under "11-20". CACD's ages are 14..62, so nothing is dropped there.
"""

from __future__ import annotations

from typing import Sequence

from ipcgan_jax.constants import AGE_GROUP_UPPER_AGES, MIN_AGE


def validate_boundaries(boundaries: Sequence[int], min_age: int = MIN_AGE) -> None:
    """Raises ValueError unless the boundaries are integers, strictly increasing, >= min_age."""
    if len(boundaries) == 0:
        raise ValueError("age group boundaries must not be empty")
    if any(int(b) != b for b in boundaries):
        raise ValueError(f"age group boundaries must be integers, got {tuple(boundaries)}")
    if any(later <= earlier for earlier, later in zip(boundaries, boundaries[1:])):
        raise ValueError(f"age group boundaries must increase strictly, got {tuple(boundaries)}")
    if boundaries[0] < min_age:
        raise ValueError(
            f"first age group boundary {boundaries[0]} is below the minimum age {min_age}"
        )


def age_to_group(
    age: int,
    boundaries: Sequence[int] = AGE_GROUP_UPPER_AGES,
    min_age: int = MIN_AGE,
) -> int:
    """Returns the 0-based age group of `age` (upper boundaries inclusive).

    Raises:
      ValueError: `age` is not a whole number or is below `min_age`.
    """
    validate_boundaries(boundaries, min_age)
    if int(age) != age:
        raise ValueError(f"age must be a whole number of years, got {age!r}")
    if age < min_age:
        raise ValueError(f"age {age} is below the minimum age {min_age} of the first group")
    return sum(1 for upper in boundaries if age > upper)


def age_group_labels(
    boundaries: Sequence[int] = AGE_GROUP_UPPER_AGES,
    min_age: int = MIN_AGE,
) -> tuple[str, ...]:
    """Display labels of the groups, e.g. ("11-20", "21-30", "31-40", "41-50", "51+")."""
    validate_boundaries(boundaries, min_age)
    lower_bounds = [min_age] + [upper + 1 for upper in boundaries]
    labels = [f"{lower}-{upper}" for lower, upper in zip(lower_bounds, boundaries)]
    labels.append(f"{lower_bounds[-1]}+")
    return tuple(labels)
