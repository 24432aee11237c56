"""How every benchmark prints its result: JSON on stdout, optionally also to a file."""
from __future__ import annotations

import json
from typing import Any


def print_report(report: Any, json_path: str | None = None, indent: int | None = 1) -> None:
    """Prints `report` as JSON and, when `json_path` is given, writes the same text there."""
    text = json.dumps(report, indent=indent)
    print(text, flush=True)
    if json_path:
        with open(json_path, "w") as handle:
            handle.write(text + "\n")
