"""Data parallelism over every device of every host with `jax.jit` and named shardings.

The global batch is split along its first axis over a 1-D mesh named 'data'; parameters
and optimizer states are replicated. BatchNorm means over the batch axis therefore run
over the whole global batch, exactly as on one device. This is what `jax.pmap` did;
pmap is now built on the same machinery and is in maintenance mode.

Across processes (multi-host runs): `sync_processes`, `gather_to_host` and `any_process`
are no-ops or local with one process, collectives with several.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ipcgan_jax.configlib import ConfigError

PyTree = Any
DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D data-parallel mesh over `devices` (default: every device of every process)."""
    devices = list(devices) if devices is not None else jax.devices()
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh, key: str = "batch_size") -> None:
    devices, processes = mesh.devices.size, jax.process_count()
    if global_batch_size % devices or global_batch_size % processes:
        raise ConfigError(f"config key {key!r} ({global_batch_size}) must be divisible by the "
                         f"number of devices ({devices}) and processes ({processes})")


def shard_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows of the global batch -> global arrays sharded over the mesh.

    Scalars (e.g. the step number) are dropped: the step reads only per-example arrays."""
    sharding = batch_sharded(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local_batch.items() if np.ndim(v) > 0}


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Places a host pytree (identical on every process) replicated on the mesh."""
    sharding = replicated(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda idx: np.asarray(x)[idx]),
        tree)


def to_host(tree: PyTree) -> PyTree:
    """Fully replicated global arrays -> numpy on this process."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else x, tree)


def sync_processes(name: str) -> None:
    """Waits until every process reaches the barrier `name` (e.g. after the chief wrote a file)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def gather_to_host(x: jax.Array) -> np.ndarray:
    """A batch-sharded global array -> all of its rows as numpy, on every process."""
    if jax.process_count() == 1:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def any_process(flag: bool) -> bool:
    """True on every process if `flag` is true on any of them."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))
