"""Checkpoints: the only module that imports Orbax.

Two formats:
- training checkpoints in `WORKDIR/checkpoints/<step>/` managed by `TrainCheckpointer`
  (Orbax `CheckpointManager`: asynchronous, keeps the last N and every K-th step), holding
  the train state and a small JSON of run bookkeeping (data position, config hash);
- exported network variables (`save_variables` / `load_variables`): one directory per
  network with `variables/` (Orbax PyTree) and `metadata.json`. Trained auxiliary
  networks, converted original weights and the frozen inputs of the GAN use this format.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

PyTree = Any
CHECKPOINTS_DIR = "checkpoints"  # of a run's workdir
METADATA_FILE = "metadata.json"
VARIABLES_DIR = "variables"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not match what the run expects."""


def save_variables(directory: str, variables: PyTree, metadata: dict) -> None:
    """Writes `variables` (a nested dict of arrays) and JSON `metadata` to `directory`.

    Refuses to write into an existing non-empty directory, so nothing is overwritten."""
    directory = os.path.abspath(directory)
    if os.path.isdir(directory) and os.listdir(directory):
        raise FileExistsError(f"{directory} exists and is not empty; refusing to overwrite it")
    os.makedirs(directory, exist_ok=True)
    host_variables = jax.tree.map(np.asarray, variables)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.join(directory, VARIABLES_DIR), host_variables)
        checkpointer.wait_until_finished()
    if jax.process_index() == 0:
        with open(os.path.join(directory, METADATA_FILE), "w") as f:
            json.dump(metadata, f, indent=2, sort_keys=True)


def load_variables(directory: str) -> tuple[PyTree, dict]:
    """Reads what `save_variables` wrote: (variables as numpy arrays, metadata)."""
    directory = os.path.abspath(directory)
    variables_dir = os.path.join(directory, VARIABLES_DIR)
    if not os.path.isdir(variables_dir):
        raise CheckpointError(f"no exported network variables at {directory} "
                              f"(expected {VARIABLES_DIR}/ and {METADATA_FILE} inside)")
    with ocp.StandardCheckpointer() as checkpointer:
        variables = checkpointer.restore(variables_dir)
    metadata_path = os.path.join(directory, METADATA_FILE)
    metadata = {}
    if os.path.exists(metadata_path):
        with open(metadata_path) as f:
            metadata = json.load(f)
    return jax.tree.map(np.asarray, variables), metadata


class TrainCheckpointer:
    """Periodic, asynchronous training checkpoints under `directory`.

    keep_last: the newest N checkpoints are kept; keep_every: steps divisible by K are
    kept forever (0 disables). An interrupted asynchronous save leaves an Orbax temporary
    folder, which the next run ignores and cleans up; restoring always takes the latest
    complete step.
    """

    def __init__(self, directory: str, *, keep_last: int, keep_every: int,
                 async_save: bool = True):
        policies = [checkpoint_managers.LatestN(keep_last)]
        if keep_every:
            policies.append(checkpoint_managers.EveryNSteps(keep_every))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            create=True)
        self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options,
                                              item_names=("state", "run"))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: PyTree, run_info: dict) -> None:
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), run=ocp.args.JsonSave(run_info)), force=True)

    def restore(self, step: int, abstract_state: PyTree) -> tuple[PyTree, dict]:
        """Restores `step` into the shapes, dtypes and shardings of `abstract_state`."""
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), run=ocp.args.JsonRestore()))
        return restored["state"], restored["run"]

    def wait_until_finished(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def restore_state_tree(checkpoints_dir: str, step: int | None = None) -> tuple[PyTree, dict, int]:
    """Reads a `TrainCheckpointer` checkpoint without knowing its structure in advance.

    For readers of finished runs (inference, evaluation): no template, no sharding, never
    writes. Returns (the state as a nested dict of numpy arrays, the run bookkeeping JSON,
    the step read); `step` None means the latest complete step.
    """
    checkpoints_dir = os.path.abspath(checkpoints_dir)
    if not os.path.isdir(checkpoints_dir):
        raise CheckpointError(f"no training checkpoints at {checkpoints_dir}")
    options = ocp.CheckpointManagerOptions(create=False, read_only=True)
    with ocp.CheckpointManager(checkpoints_dir, options=options, item_names=("state", "run")) as manager:
        available = list(manager.all_steps())
        if step is None:
            if not available:
                raise CheckpointError(f"{checkpoints_dir} holds no complete checkpoint")
            step = max(available)
        elif step not in available:
            raise CheckpointError(f"{checkpoints_dir} has no checkpoint for step {step} "
                                  f"(available: {sorted(available)})")
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(), run=ocp.args.JsonRestore()))
    return jax.tree.map(np.asarray, restored["state"]), dict(restored["run"] or {}), int(step)
