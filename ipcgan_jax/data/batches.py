"""Input batches for the trainers, from the backend that `config.data.backend` names.

  'tfdata' (default): tf.data (`ipcgan_jax.data.pipeline`);
  'numpy': numpy and background threads (`ipcgan_jax.data.numpy_pipeline`), for hosts
    without TensorFlow.
Both make the batches of the same plans (`ipcgan_jax.data.plan`: same schedule, scalings
of docs/faithfulness.md §8, per-process shard, resume), and give identical arrays for a
(seed, step) on the same faces. This module imports TensorFlow only when the tfdata
backend is used.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ipcgan_jax.constants import DATA_BACKENDS
from ipcgan_jax.data.numpy_pipeline import NumpyBatches
from ipcgan_jax.data.plan import BatchPlan, ClassifierPlan, EvalPlan, GanPlan
from ipcgan_jax.data.sources import FaceSource

if TYPE_CHECKING:
    from ipcgan_jax.data.pipeline import TfDataBatches


def backend_batches(plan: BatchPlan, backend: str) -> NumpyBatches | TfDataBatches:
    """The `backend`'s maker of the batches of `plan` (both kinds have `batch_at(step)`
    and `batches(num_steps, start_step, prefetch)`)."""
    if backend == "numpy":
        return NumpyBatches(plan)
    if backend == "tfdata":
        from ipcgan_jax.data import pipeline  # TensorFlow is imported only here

        return pipeline.TfDataBatches(plan)
    raise ValueError(f"data config field 'backend' is {backend!r}; expected one of "
                     f"{', '.join(repr(name) for name in DATA_BACKENDS)}")


def gan_batches(source: FaceSource, *, backend: str = "tfdata", num_steps: int,
                start_step: int = 0, prefetch: int = 2, **options: Any
                ) -> Iterator[dict[str, np.ndarray]]:
    """GAN batches of steps start_step .. num_steps - 1; options: `GanPlan`'s (batch_size,
    seed, image_size, alexnet_size, source_groups, mixed_age, flip, process_index, ...)."""
    plan = GanPlan(source, **options)
    return backend_batches(plan, backend).batches(num_steps, start_step, prefetch)


def classifier_batches(source: FaceSource, *, backend: str = "tfdata", num_steps: int,
                       start_step: int = 0, prefetch: int = 2, **options: Any
                       ) -> Iterator[dict[str, np.ndarray]]:
    """Classifier batches of steps start_step .. num_steps - 1; options: `ClassifierPlan`'s
    (label, batch_size, seed, image_size, flip, process_index, process_count, classes)."""
    plan = ClassifierPlan(source, **options)
    return backend_batches(plan, backend).batches(num_steps, start_step, prefetch)


def eval_batches(source: FaceSource, *, backend: str = "tfdata", prefetch: int = 2,
                 **options: Any) -> Iterator[dict[str, np.ndarray]]:
    """The whole split once in index order; options: `EvalPlan`'s (batch_size, image_size,
    alexnet_size, process_index, process_count)."""
    plan = EvalPlan(source, **options)
    return backend_batches(plan, backend).batches(plan.num_batches, 0, prefetch)
