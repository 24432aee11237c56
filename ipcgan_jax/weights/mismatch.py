"""The error every weight reader raises for weights that do not fit the networks."""
from __future__ import annotations

from typing import Sequence

# Names listed per kind of problem; a file of another network can differ in hundreds.
MAX_LISTED = 20

Shape = tuple[int, ...]


class CheckpointMismatchError(ValueError):
    """Stored weights do not match the networks' variables by name and shape."""


def mismatch_message(source: str, heading: str, *, missing: Sequence[str] = (),
                     unexpected: Sequence[str] = (),
                     misshaped: Sequence[tuple[str, Shape, Shape]] = (),
                     stored_in: str = "file") -> str:
    """`source: heading`, then the missing, unexpected and mis-shaped names, each kind
    with its count and at most `MAX_LISTED` names. misshaped: (name, stored shape,
    expected shape); `stored_in` names where the stored shape was read."""
    shape_lines = [f"{name}: {stored_in} {tuple(stored)}, expected {tuple(expected)}"
                   for name, stored, expected in misshaped]
    lines = [f"{source}: {heading}"]
    for title, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shape_lines)):
        if names:
            lines.append(f"  {title} ({len(names)}):")
            lines.extend(f"    {name}" for name in names[:MAX_LISTED])
            if len(names) > MAX_LISTED:
                lines.append(f"    ... and {len(names) - MAX_LISTED} more")
    return "\n".join(lines)
