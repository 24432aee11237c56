"""A run's workdir: the guard that records its config and refuses a foreign one, and the
export of a trained network into WORKDIR/export."""
from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any

import jax
import ml_collections

from ipcgan_jax import checkpointing, parallel
from ipcgan_jax.configlib import NESTED_RUNS_KEY, ConfigError
from ipcgan_jax.constants import FIELDS_ADDED_LATER

PyTree = Any
CONFIG_FILE = "config.json"
EXPORT_DIR = "export"
# Settings a resumed run may change: they do not alter the training trajectory (the data
# schedule does not depend on num_steps, so training can be extended; both input backends
# give identical batches).
RESUMABLE_CHANGES = frozenset({"num_steps", "log_every", "sample_every", "checkpoint.keep_last",
                               "checkpoint.keep_every", "checkpoint.async_save", "data.prefetch",
                               "data.backend", "data.packed_path"})


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Creates `workdir`, records the config, and refuses to resume under another config
    (except for `RESUMABLE_CHANGES`, e.g. a larger num_steps to extend training). A change
    binds only where something was trained under the recorded config: a key of a nested
    run (`pretrain.NAME.*`) once that run saved a checkpoint or its export, any other key
    once the run itself saved a checkpoint or export. Otherwise the new config is recorded,
    with a warning: a start that failed before its first checkpoint (a bad batch size, a
    dataset not built) does not lock the workdir to its config.

    A workdir holding a `checkpoints/` folder without this project's config file was not
    written by a run of this project: refuse rather than touch it. What a run writes is
    its own; anything else in the workdir is the user's and untouched."""
    os.makedirs(workdir, exist_ok=True)
    config_path = os.path.join(workdir, CONFIG_FILE)
    current = json.loads(config.to_json_best_effort(sort_keys=True))
    if os.path.exists(config_path):
        try:
            recorded = checkpointing.read_json_object(config_path)
        except checkpointing.CheckpointError as error:
            raise ConfigError(f"{error}; it records this workdir's run: restore it, or choose a new "
                              "--workdir") from None
        changed = sorted(key for key in _diff_keys(recorded, current) - RESUMABLE_CHANGES
                         if not _added_later_at_default(recorded, current, key))
        binding = [key for key in changed if _holds_training_state(_run_of_key(workdir, key))]
        if binding and recorded.get("task") != current.get("task"):
            raise ConfigError(f"{workdir} holds a {recorded.get('task')!r} run, not a "
                              f"{current.get('task')!r} one; choose a new --workdir")
        if binding:
            raise ConfigError(
                f"{workdir} holds a run with a different config (changed keys: {', '.join(binding)}); "
                "resume it with the same config or choose a new --workdir")
        if changed:
            logging.getLogger(__name__).warning(
                "%s recorded another config (changed keys: %s), but nothing was trained under it: "
                "recording this run's", workdir, ", ".join(changed))
        if recorded != current and jax.process_index() == 0:
            _write_json(config_path, current)
        return
    if os.path.exists(os.path.join(workdir, checkpointing.CHECKPOINTS_DIR)):
        raise ConfigError(f"{workdir}/{checkpointing.CHECKPOINTS_DIR} exists but was not written by "
                          f"ipcgan_jax (no {CONFIG_FILE}); choose a new --workdir")
    if jax.process_index() == 0:
        _write_json(config_path, current)


def _run_of_key(workdir: str, key: str) -> str:
    """The workdir of the run that config `key` (dotted) configures: a nested run's own
    sub-folder for `pretrain.NAME.*`, else `workdir`."""
    parts = key.split(".")
    return os.path.join(workdir, parts[1]) if parts[0] == NESTED_RUNS_KEY and len(parts) > 1 else workdir


def _holds_training_state(workdir: str) -> bool:
    """Whether the run in `workdir` saved anything it trained (a checkpoint or an export)."""
    checkpoints = os.path.join(workdir, checkpointing.CHECKPOINTS_DIR)
    return has_export(workdir) or (os.path.isdir(checkpoints) and bool(os.listdir(checkpoints)))


def _write_json(path: str, content: dict) -> None:
    """Written beside, then moved into place: a run killed meanwhile leaves the old file or
    the new one, never half of one."""
    with open(path + ".writing", "w") as f:
        json.dump(content, f, indent=2, sort_keys=True)
    os.replace(path + ".writing", path)


def _lookup(tree: dict, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _MISSING
        tree = tree[part]
    return tree


_MISSING = object()


def _added_later_at_default(recorded: dict, current: dict, key: str) -> bool:
    return (key in FIELDS_ADDED_LATER and _lookup(recorded, key) is _MISSING
            and _lookup(current, key) == FIELDS_ADDED_LATER[key])


def _diff_keys(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = set()
        for key in set(a) | set(b):
            out |= _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return set() if a == b else {prefix.rstrip(".")}


def check_export_dir(workdir: str, task: str) -> dict | None:
    """The metadata of WORKDIR/export when a `task` run wrote it, None when there is none;
    ConfigError when something else is there (the user's: never replaced). Runs check it
    at their start, so that the export at their end cannot fail on it."""
    export_dir = os.path.join(workdir, EXPORT_DIR)
    if not os.path.exists(export_dir):
        return None
    metadata_path = os.path.join(export_dir, checkpointing.METADATA_FILE)
    try:
        previous = checkpointing.read_json_object(metadata_path) if os.path.isfile(metadata_path) else {}
    except checkpointing.CheckpointError:  # not this project's metadata: someone else's folder
        previous = {}
    if previous.get("task") != task:
        raise ConfigError(f"{export_dir} exists and was not written by a {task!r} run; move it away or "
                          "choose a new --workdir")
    return previous


def has_export(workdir: str) -> bool:
    """Whether the run in `workdir` completed its export."""
    return os.path.isdir(os.path.join(workdir, EXPORT_DIR, checkpointing.VARIABLES_DIR))


def write_export(workdir: str, variables: PyTree, metadata: dict) -> str:
    """Writes WORKDIR/export (`checkpointing.save_variables`); replaces an export of an
    earlier step of this task (training was extended), refuses to touch one that a run of
    this task did not write. metadata must hold "task" and "step"."""
    export_dir = os.path.join(workdir, EXPORT_DIR)
    previous = check_export_dir(workdir, metadata["task"])
    if previous is not None and previous.get("step") == metadata["step"]:
        return export_dir
    # Written beside, then moved into place: an interrupted export never looks complete.
    staging = export_dir + ".writing"
    is_chief = jax.process_index() == 0
    if is_chief and os.path.exists(staging):
        shutil.rmtree(staging)  # an export interrupted before it completed
    parallel.sync_processes("export staging")
    checkpointing.save_variables(staging, variables, metadata)
    if is_chief:
        if os.path.exists(export_dir):
            shutil.rmtree(export_dir)
        os.replace(staging, export_dir)
    parallel.sync_processes("export")
    return export_dir
