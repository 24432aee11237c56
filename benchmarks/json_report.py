"""How every benchmark prints its result (JSON on stdout, optionally also to a file), and
reads a worker subprocess's."""
from __future__ import annotations

import json
import os
import subprocess
from typing import Any


def print_report(report: Any, json_path: str | None = None, indent: int | None = 1) -> None:
    """Prints `report` as JSON and, when `json_path` is given, writes the same text there."""
    text = json.dumps(report, indent=indent)
    print(text, flush=True)
    if json_path:
        with open(json_path, "w") as handle:
            handle.write(text + "\n")


def run_json(command: list[str], env: dict | None = None) -> dict:
    """Runs a worker and returns the last JSON object it printed, with the 1-minute load
    average before it started; on failure {"error": ..., "stderr_tail": ...}."""
    load = os.getloadavg()[0]
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}", "stderr_tail": proc.stderr[-2000:]}
    result = json.loads(lines[-1])
    result["load_1min_before"] = round(load, 2)
    return result
