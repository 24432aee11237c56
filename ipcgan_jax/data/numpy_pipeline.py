"""The numpy input backend: the batches of a plan without TensorFlow.

For hosts that have JAX but not TensorFlow (`config.data.backend = 'numpy'`). It makes
the batches of the same plans as the tf.data backend (`pipeline`) and gives identical
arrays: TF1's legacy bilinear resize in float32 with TF's operation order
(`legacy_resize`), then the same scalings (`plan.image_fields`). Batches are made
ahead in background threads (numpy's gathers and arithmetic release the GIL).
Images come from `FaceSource.images`: faces in memory (the synthetic set) or a packed
copy of a built dataset (`ipcgan_jax.data.packed`) need no TensorFlow.
"""
from __future__ import annotations

import collections
import concurrent.futures
import os
from collections.abc import Iterator

import numpy as np

from ipcgan_jax.data.legacy_resize import resize_uint8
from ipcgan_jax.data.plan import BatchPlan, check_steps


def _to_pixels(resized: np.ndarray) -> np.ndarray:
    # np.round rounds halves to even, as tf.round.
    return np.clip(np.round(resized), 0.0, 255.0).astype(np.uint8)


class NumpyBatches:
    """The batches of `plan` made with numpy: `batch_at(step)` or an iterator of steps."""

    def __init__(self, plan: BatchPlan):
        self.plan = plan

    def batch_at(self, step: int) -> dict[str, np.ndarray]:
        """The batch the iterator yields at `step`, computed on its own."""
        plan = self.plan
        indices, flips, labels = plan.arrays_at(int(step))
        images = plan.source.images(indices)
        if plan.flip:
            images = np.where(flips[:, None, None, None], images[:, :, ::-1], images)
        return {**plan.image_fields(images, resize_uint8, _to_pixels), **labels}

    def batches(self, num_steps: int, start_step: int = 0, prefetch: int = 2
                ) -> Iterator[dict[str, np.ndarray]]:
        """Batches of steps start_step .. num_steps - 1, as numpy dicts. As tf.data's
        parallel map, one thread per core makes batches, and up to `prefetch` finished
        ones wait for the consumer."""
        check_steps(start_step, num_steps)
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        return self._iterate(range(start_step, num_steps), os.cpu_count() or 1, prefetch)

    def _iterate(self, steps: range, num_threads: int, prefetch: int
                 ) -> Iterator[dict[str, np.ndarray]]:
        pool = concurrent.futures.ThreadPoolExecutor(num_threads, "numpy-batches")
        pending: collections.deque[concurrent.futures.Future] = collections.deque()
        try:
            for step in steps:
                pending.append(pool.submit(self.batch_at, step))
                if len(pending) >= num_threads + prefetch:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            # A consumer that stops early drops the batches made ahead.
            pool.shutdown(wait=True, cancel_futures=True)
