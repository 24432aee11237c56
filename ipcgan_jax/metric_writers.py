"""Metrics and images to TensorBoard event files and a JSON-lines file.

Only process 0 writes; other processes get a writer that does nothing, so the training
loops need no `if process_index == 0` branches.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Mapping

import numpy as np


class MetricWriter:
    """Writes scalars to WORKDIR/metrics.jsonl and TensorBoard (WORKDIR/tensorboard)."""

    def __init__(self, workdir: str, *, enabled: bool = True):
        self._enabled = enabled
        self._tb = None
        self._jsonl = None
        if enabled:
            from tensorboardX import SummaryWriter  # imported here: tensorboardX starts threads
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self._enabled:
            return
        clean = {k: float(v) for k, v in scalars.items()}
        for key, value in clean.items():
            self._tb.add_scalar(key, value, step)
        record = {"step": int(step), "time": time.time()}
        record.update({k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()})
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()

    def write_image(self, step: int, tag: str, image: np.ndarray) -> None:
        """image: uint8 (H, W, 3)."""
        if self._enabled:
            self._tb.add_image(tag, np.asarray(image), step, dataformats="HWC")

    def write_event(self, step: int, event: str, **fields) -> None:
        """A non-scalar line in metrics.jsonl (run started, resumed, stopped, ...)."""
        if self._enabled:
            self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), "event": event, **fields}) + "\n")
            self._jsonl.flush()

    def flush(self) -> None:
        if self._enabled:
            self._tb.flush()
            self._jsonl.flush()

    def close(self) -> None:
        if self._enabled:
            self._tb.close()
            self._jsonl.close()
            self._enabled = False
