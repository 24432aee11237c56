"""The argument check shared by the drop-in replacements of `lax.conv_general_dilated`
(`layers.conv_im2col`, `onednn.conv_onednn`): both take NHWC inputs, HWIO kernels and no
dilation, and refuse anything else by name instead of computing another conv."""
from __future__ import annotations

from typing import Any, Sequence

import jax


def check_nhwc_without_dilation(name: str, lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any,
                                lhs_dilation: Sequence[int] | None, rhs_dilation: Sequence[int] | None) -> None:
    """ValueError naming `name` unless the conv is NHWC/HWIO/NHWC without dilation."""
    nhwc = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
    if dimension_numbers is None or jax.lax.conv_dimension_numbers(
            lhs.shape, rhs.shape, dimension_numbers) != nhwc:
        raise ValueError(f"{name} supports NHWC/HWIO/NHWC only, got {dimension_numbers!r}")
    if any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))):
        raise ValueError(f"{name} does not support dilation")
