"""Checkpoints: the only module that imports Orbax.

Two formats:
- training checkpoints in `WORKDIR/checkpoints/<step>/` managed by `TrainCheckpointer`
  (Orbax `CheckpointManager`: asynchronous, keeps the last N and every K-th step), holding
  the train state and a small JSON of run bookkeeping (data position, config hash);
- exported network variables (`save_variables` / `load_variables`): one directory per
  network with `variables/` (Orbax PyTree) and `metadata.json`. Trained auxiliary
  networks, converted original weights and the frozen inputs of the GAN use this format.

Failures come back as `CheckpointError`s that say which step and why in one line:
`UnreadableCheckpointError` for damaged files (truncated or missing array data, a corrupt
manifest or metadata JSON), `CheckpointSaveError` for a save that could not be written
(disk full, permission lost), a plain `CheckpointError` naming the field for a checkpoint
whose state has another layout than the run builds. Orbax logs each such failure from its
worker threads with full tracebacks, and its abandoned asyncio tasks print more when they
are collected; both are silenced here (see `_quiet_orbax_failures`), the exceptions carry
the reason.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import sys
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

PyTree = Any
CHECKPOINTS_DIR = "checkpoints"  # of a run's workdir
QUARANTINE_DIR = "checkpoints_quarantine"  # of a run's workdir: unreadable checkpoints moved aside
METADATA_FILE = "metadata.json"
VARIABLES_DIR = "variables"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not match what the run expects."""


class UnreadableCheckpointError(CheckpointError):
    """The files of checkpoint `step` are damaged; `reason` says how, `tag` in a word
    (truncated, missing, corrupt, corrupt-metadata, unreadable)."""

    def __init__(self, directory: str, step: int, reason: str, tag: str):
        super().__init__(f"checkpoint {step} in {directory} is unreadable: {reason}")
        self.step, self.reason, self.tag = step, reason, tag


class StepNotFoundError(CheckpointError):
    """The checkpoint step asked for is not among the complete ones (the message lists them)."""


# The errors that choosing another checkpoint step can get past (readers say how).
STEP_ERRORS = (UnreadableCheckpointError, StepNotFoundError)


class CheckpointSaveError(CheckpointError):
    """A checkpoint could not be written; the complete ones before it are untouched."""


# TensorStore status codes of damaged files: (tag, what it means for a checkpoint).
_TENSORSTORE_DAMAGE = {
    "OUT_OF_RANGE": ("truncated", "array data truncated"),
    "DATA_LOSS": ("corrupt", "corrupt manifest or array data"),
    "NOT_FOUND": ("missing", "array data or manifest missing"),
    "FAILED_PRECONDITION": ("unreadable", "unreadable array data or metadata"),
}
# Orbax's JSON files in a step folder (for naming the corrupt one).
_JSON_FILES = ("_CHECKPOINT_METADATA", "_METADATA", "_sharding", "metadata", "process_0")
_MAX_REASON_CHARS = 240


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _short(text: str, step_dir: str = "") -> str:
    """One line of `text` without TensorStore's spec dump and with paths made relative."""
    text = text.split(" [tensorstore_spec", 1)[0].split("See full TensorStore details", 1)[0]
    if step_dir:
        text = text.replace(f'local file "{step_dir}/', '"').replace(f"{step_dir}/", "")
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON_CHARS else text[:_MAX_REASON_CHARS - 3] + "..."


def _invalid_json_files(step_dir: str) -> list[str]:
    bad = []
    for root, _, files in os.walk(step_dir):
        for name in sorted(files):
            if name in _JSON_FILES:
                path = os.path.join(root, name)
                try:
                    with open(path) as f:
                        json.load(f)
                except (ValueError, UnicodeDecodeError):
                    bad.append(os.path.relpath(path, step_dir))
    return bad


def _damage(error: BaseException, step_dir: str) -> tuple[str, str] | None:
    """(tag, reason) when `error` (from restoring the checkpoint in `step_dir`) says that
    its files are damaged; None for other failures (e.g. a state of another shape)."""
    for cause in _chain(error):
        if isinstance(cause, json.JSONDecodeError):
            files = _invalid_json_files(step_dir)
            where = f"{', '.join(files)} is not valid JSON" if files else f"a metadata file is not valid JSON ({cause})"
            return "corrupt-metadata", f"corrupt metadata: {where}"
        if isinstance(cause, FileNotFoundError):
            return "missing", f"missing file: {_short(str(cause), step_dir)}"
        if isinstance(cause, KeyError) and "was not found in the checkpoint" in str(cause):
            return "missing", f"missing item: {_short(str(cause.args[0]), step_dir)}"
        if isinstance(cause, ValueError):
            code, _, detail = str(cause).partition(": ")
            if code in _TENSORSTORE_DAMAGE:
                tag, meaning = _TENSORSTORE_DAMAGE[code]
                detail = _short(detail, step_dir)
                array = re.match(r'Error (?:reading|opening) .*?"([^"/]+)/', detail)  # the array it failed on
                detail = detail.rsplit('": ', 1)[-1]
                return tag, f"{meaning} ({array.group(1) + ': ' if array else ''}{detail})"
    return None


def _without_fields_added_later(abstract_state: PyTree, saved_fields: set[str]) -> tuple[PyTree, list[str]]:
    """(restore target, names of the fields it leaves out): a dataclass state's fields that
    are None and that the checkpoint lacks are left out (the target becomes a dict of the
    other fields, which is how Orbax stores a dataclass); any other state is kept whole."""
    if not dataclasses.is_dataclass(abstract_state):
        return abstract_state, []
    fields = {field.name: getattr(abstract_state, field.name) for field in dataclasses.fields(abstract_state)}
    added_later = sorted(name for name, value in fields.items() if value is None and name not in saved_fields)
    if not added_later:
        return abstract_state, []
    return {name: value for name, value in fields.items() if name not in added_later}, added_later


def _structure_mismatch(error: BaseException) -> str | None:
    """Orbax's description of how a checkpoint's tree differs from the restore target, on
    one line; None for other failures."""
    for cause in _chain(error):
        message = str(cause)
        if not isinstance(cause, ValueError):
            continue
        if "tree structures do not match" in message:  # a field's kind differs (e.g. None / a tree)
            diff = message.split(":", 1)[1].rsplit("If this mismatch is intentional", 1)[0]
            diff = diff.replace("- Source:", "this run's:").replace("- Target:", "the checkpoint's:")
            return " ".join(diff.split())
        if message.startswith("Structure mismatch"):  # a path one side lacks
            return " ".join(message.split())
    return None


def _write_failure(error: BaseException) -> str:
    """The reason a save failed, in a few words (e.g. 'File too large', 'No space left')."""
    for cause in _chain(error):
        if isinstance(cause, OSError) and cause.strerror:
            return f"{cause.strerror} ({cause.filename})" if cause.filename else cause.strerror
        code = re.search(r"os_error_code='(\d+)'", str(cause))
        if code:
            where = re.search(r'Error writing local file "([^"]+)"', str(cause))
            return os.strerror(int(code.group(1))) + (f" (writing {where.group(1)})" if where else "")
    return _short(str(error).splitlines()[0] if str(error) else type(error).__name__)


class _DropOrbaxTracebacks(logging.Filter):
    """Drops the error records with a traceback that Orbax (through absl) and asyncio (for
    Orbax's tasks) log while the absl logger is below INFO verbosity (main.py's default):
    the failure they report reaches the caller as an exception, which this module turns
    into a one-line CheckpointError. `--verbosity=0` shows them."""

    def filter(self, record: logging.LogRecord) -> bool:
        orbax = f"{os.sep}orbax{os.sep}"
        about_orbax = orbax in record.pathname or orbax in record.getMessage()
        verbose = logging.getLogger("absl").isEnabledFor(logging.INFO)
        return verbose or not (about_orbax and record.levelno >= logging.ERROR and record.exc_info)


def _is_orbax_leftover(unraisable) -> bool:
    """An abandoned Orbax read or write reporting into its closed event loop."""
    code = getattr(unraisable.object, "cr_code", None)
    if code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename:
        return True
    return isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"


_quieted = False


def _quiet_orbax_failures() -> None:
    """Installs, once, the filters that keep a failed read or save to its one-line error:
    Orbax's traceback logs (`_DropOrbaxTracebacks`) and the 'Event loop is closed' reports
    of its abandoned asyncio tasks (when one array of a checkpoint fails, the others'
    reads finish after the loop that awaited them has closed)."""
    global _quieted
    if _quieted:
        return
    _quieted = True
    for logger in ("absl", "asyncio"):
        logging.getLogger(logger).addFilter(_DropOrbaxTracebacks())
    previous_hook = sys.unraisablehook

    def hook(unraisable):
        if not _is_orbax_leftover(unraisable):
            previous_hook(unraisable)

    sys.unraisablehook = hook


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


def read_json_object(path: str) -> dict:
    """The JSON object in the file at `path` (a run's config, an export's metadata);
    CheckpointError naming the file when it is not valid JSON or not an object."""
    with open(path) as f:
        try:
            content = json.load(f)
        except json.JSONDecodeError as error:
            raise CheckpointError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(content, dict):
        raise CheckpointError(f"{path} holds a {type(content).__name__}, not a JSON object")
    return content


def load_variables(directory: str) -> tuple[PyTree, dict]:
    """Reads what `save_variables` wrote: (variables as numpy arrays, metadata)."""
    directory = os.path.abspath(directory)
    variables_dir = os.path.join(directory, VARIABLES_DIR)
    if not os.path.isdir(variables_dir):
        raise CheckpointError(f"no exported network variables at {directory} "
                              f"(expected {VARIABLES_DIR}/ and {METADATA_FILE} inside)")
    metadata_path = os.path.join(directory, METADATA_FILE)
    metadata = read_json_object(metadata_path) if os.path.exists(metadata_path) else {}
    _quiet_orbax_failures()
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            variables = checkpointer.restore(variables_dir)
    except Exception as error:  # noqa: BLE001 (damaged files said in one line; the rest re-raised)
        damage = _damage(error, variables_dir)
        if damage is None:
            raise
        raise CheckpointError(f"the exported variables at {directory} are unreadable: {damage[1]}") from None
    return jax.tree.map(np.asarray, variables), metadata


class TrainCheckpointer:
    """Periodic, asynchronous training checkpoints under `directory`.

    keep_last: the newest N checkpoints are kept; keep_every: steps divisible by K are
    kept forever (0 disables). An interrupted asynchronous save leaves an Orbax temporary
    folder, which the next run ignores and cleans up; restoring always takes the latest
    complete step. A save that fails raises `CheckpointSaveError` (from `save` of the next
    step or from `wait_until_finished`/`close`, as asynchronous saves report late); a
    damaged checkpoint raises `UnreadableCheckpointError` from `restore`.
    """

    def __init__(self, directory: str, *, keep_last: int, keep_every: int,
                 async_save: bool = True):
        _quiet_orbax_failures()
        self.directory = os.path.abspath(directory)
        policies = [checkpoint_managers.LatestN(keep_last)]
        if keep_every:
            policies.append(checkpoint_managers.EveryNSteps(keep_every))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            create=True)
        # Handlers named up front: a fresh manager can then read a step's metadata before
        # restoring it (`restore`).
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers={
            "state": ocp.StandardCheckpointHandler(), "run": ocp.JsonCheckpointHandler()})
        self._unfinished_step: int | None = None  # the save in flight (asynchronous saves)
        self._failed = False  # a failed save was reported: close() does not report it again

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """The complete checkpoints' steps, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: PyTree, run_info: dict) -> None:
        self.wait_until_finished()  # reports a failure of the previous (asynchronous) save
        self._unfinished_step = step
        try:
            self._manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), run=ocp.args.JsonSave(run_info)), force=True)
        except Exception as error:  # noqa: BLE001 (any failure to write is reported the same way)
            self._raise_save_failure(error)

    def _raise_save_failure(self, error: BaseException) -> None:
        step, self._unfinished_step, self._failed = self._unfinished_step, None, True
        complete = [s for s in _finalized_steps(self.directory) if s != step]
        kept = (f"checkpoint {max(complete)} is the last complete one and the next run resumes from it"
                if complete else "there is no complete checkpoint: the next run starts from step 0")
        raise CheckpointSaveError(f"saving checkpoint {step} in {self.directory} failed: "
                                  f"{_write_failure(error)}; {kept}") from None

    def restore(self, step: int, abstract_state: PyTree) -> tuple[PyTree, dict]:
        """Restores `step` into the shapes, dtypes and shardings of `abstract_state`.

        A field of a dataclass state that is None in `abstract_state` (an option left off)
        and absent from the checkpoint was added to the state after the checkpoint was
        written: it comes back as None, as config fields added later resume at the value
        that reproduces the recorded run. Any other difference in the state's structure
        raises a CheckpointError naming it."""
        step_dir = os.path.join(self.directory, str(step))
        try:
            saved_fields = set(self._manager.item_metadata(step)["state"].keys())
            target, added_later = _without_fields_added_later(abstract_state, saved_fields)
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), run=ocp.args.JsonRestore()))
        except Exception as error:  # noqa: BLE001 (classified below; the rest re-raised as is)
            damage = _damage(error, step_dir)
            if damage is not None:
                raise UnreadableCheckpointError(self.directory, step, damage[1], damage[0]) from None
            mismatch = _structure_mismatch(error)
            if mismatch is None:
                raise
            raise CheckpointError(f"checkpoint {step} in {self.directory} does not hold the state this run "
                                  f"builds (written by another version of ipcgan_jax?): {mismatch}") from None
        state = restored["state"]
        if added_later:
            state = type(abstract_state)(**state, **{name: None for name in added_later})
        return state, restored["run"]

    def move_aside(self, step: int, tag: str) -> str:
        """Moves the folder of checkpoint `step` to WORKDIR/checkpoints_quarantine/<step>-<tag>
        (-2, -3, ... if taken), where Orbax no longer sees it; returns the new path. Call it
        on one process, then `reload` on all."""
        quarantine = os.path.join(os.path.dirname(self.directory), QUARANTINE_DIR)
        os.makedirs(quarantine, exist_ok=True)
        target, suffix = os.path.join(quarantine, f"{step}-{tag}"), 1
        while os.path.exists(target):
            suffix += 1
            target = os.path.join(quarantine, f"{step}-{tag}-{suffix}")
        shutil.move(os.path.join(self.directory, str(step)), target)
        return target

    def reload(self) -> None:
        """Rereads the checkpoint folder (after `move_aside`)."""
        self._manager.reload()

    def wait_until_finished(self) -> None:
        try:
            self._manager.wait_until_finished()
        except Exception as error:  # noqa: BLE001
            if self._failed:
                return
            self._raise_save_failure(error)
        self._unfinished_step = None

    def close(self) -> None:
        """Waits for the save in flight (raising CheckpointSaveError if it failed) and closes."""
        try:
            self.wait_until_finished()
        finally:
            try:
                self._manager.close()
            except Exception:  # noqa: BLE001 (closing after a failed save; already reported)
                if not self._failed:
                    raise


def _finalized_steps(directory: str) -> list[int]:
    """Steps whose checkpoint folder was completed (Orbax renames a step's temporary folder
    to `<step>` once every file is written)."""
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory)
                  if name.isdigit() and os.path.isdir(os.path.join(directory, name)))


def restore_state_tree(checkpoints_dir: str, step: int | None = None) -> tuple[PyTree, dict, int]:
    """Reads a `TrainCheckpointer` checkpoint without knowing its structure in advance.

    For readers of finished runs (inference, evaluation): no template, no sharding, never
    writes. Returns (the state as a nested dict of numpy arrays, the run bookkeeping JSON,
    the step read); `step` None means the latest complete step. A damaged checkpoint raises
    `UnreadableCheckpointError` naming the other steps there (callers say how to choose one).
    """
    _quiet_orbax_failures()
    checkpoints_dir = os.path.abspath(checkpoints_dir)
    if not os.path.isdir(checkpoints_dir):
        raise CheckpointError(f"no training checkpoints at {checkpoints_dir}")
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(max(level, logging.ERROR))  # Orbax's warnings that read_only is read-only
    try:
        options = ocp.CheckpointManagerOptions(create=False, read_only=True)
        manager = ocp.CheckpointManager(checkpoints_dir, options=options, item_names=("state", "run"))
    finally:
        absl_logger.setLevel(level)
    with manager:
        available = sorted(manager.all_steps())
        if step is None:
            if not available:
                raise CheckpointError(f"{checkpoints_dir} holds no complete checkpoint")
            step = max(available)
        elif step not in available:
            raise StepNotFoundError(f"{checkpoints_dir} has no checkpoint for step {step} "
                                  f"(available: {available})")
        try:
            restored = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(), run=ocp.args.JsonRestore()))
        except Exception as error:  # noqa: BLE001 (classified below; the rest re-raised as is)
            damage = _damage(error, os.path.join(checkpoints_dir, str(step)))
            if damage is None:
                raise
            others = ", ".join(str(s) for s in available if s != step) or "none"
            raise UnreadableCheckpointError(checkpoints_dir, step, f"{damage[1]}; other steps there: {others}",
                                            damage[0]) from None
    return jax.tree.map(np.asarray, restored["state"]), dict(restored["run"] or {}), int(step)
