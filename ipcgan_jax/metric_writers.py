"""Metrics and images to WORKDIR/metrics.jsonl and TensorBoard (WORKDIR/tensorboard).

Only process 0 writes; other processes get a writer that does nothing, so the training
loops need no `if process_index == 0` branches.

The methods have the signatures of `clu.metric_writers.MetricWriter`'s, but this is not
one: importing `clu.metric_writers` imports TensorFlow (its TF summary writer), and the
trainers must run on hosts without it (the numpy input backend). TensorBoard files are
written with tensorboardX, which needs no TensorFlow.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping

import numpy as np
from tensorboardX import SummaryWriter

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricWriter:
    """Scalars to WORKDIR/metrics.jsonl (one JSON line per `write_scalars` call:
    {"step", "time", **scalars}, non-finite values as strings) and TensorBoard; images to
    TensorBoard; the run's events (started, resumed, ...) to metrics.jsonl. Every line is
    flushed at once, so a killed run keeps what it logged."""

    def __init__(self, workdir: str, *, enabled: bool = True):
        self._enabled = enabled
        if enabled:
            self._tensorboard = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR))
            self._jsonl = open(os.path.join(workdir, METRICS_FILE), "a")

    def _write_line(self, record: dict) -> None:
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self._enabled:
            return
        clean = {k: float(v) for k, v in scalars.items()}
        for key, value in clean.items():
            self._tensorboard.add_scalar(key, value, step)
        self._write_line({"step": int(step), "time": time.time(),
                          **{k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()}})

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """images: tag -> uint8 (H, W, 3)."""
        if self._enabled:
            for tag, image in images.items():
                self._tensorboard.add_image(tag, np.asarray(image), step, dataformats="HWC")

    def write_event(self, step: int, event: str, **fields: Any) -> None:
        """A non-scalar line in metrics.jsonl (run started, resumed, stopped, ...)."""
        if self._enabled:
            self._write_line({"step": int(step), "time": time.time(), "event": event, **fields})

    def close(self) -> None:
        if self._enabled:
            self._tensorboard.close()
            self._jsonl.close()
            self._enabled = False
