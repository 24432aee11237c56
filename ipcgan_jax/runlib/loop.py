"""The training loop both trainers run, and what it needs: the open run (workdir guard,
mesh, metric writer, checkpointer), the newest readable checkpoint restored (damaged
ones moved aside), preemption handling and finite checks.

Per step the loop runs the compiled step and keeps its metrics on the devices; at every
log step and checkpoint step it fetches them, stops on a non-finite value (so no
non-finite state is ever checkpointed), and at log steps writes their means with the
throughput. It checkpoints every `checkpoint.every` steps and at the end, and on SIGTERM
(cluster preemption) or Ctrl-C saves at the next log or checkpoint step and returns.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import time
from typing import Any, Callable, Iterator, Mapping

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from ipcgan_jax import checkpointing, parallel
from ipcgan_jax.metric_writers import MetricWriter
from ipcgan_jax.runlib.workdir import prepare_workdir

PyTree = Any


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


def check_finite(step: int, metrics: Mapping[str, float]) -> None:
    """NonFiniteLossError naming the non-finite metrics and the step."""
    bad = [k for k, v in metrics.items() if not np.isfinite(v)]
    if bad:
        raise NonFiniteLossError(
            f"non-finite {', '.join(sorted(bad))} at step {step}; stopping (the last good "
            "checkpoint is kept)")


class StopRequest:
    """Set by SIGTERM (cluster preemption) or Ctrl-C (SIGINT) so the loop saves and exits
    cleanly; a second Ctrl-C stops at once (KeyboardInterrupt), losing the steps since the
    last checkpoint."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = False
        self.reason = ""  # the signal's name

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        def handler(signum, frame):
            if signum == signal.SIGINT and self.requested:
                raise KeyboardInterrupt
            self.requested, self.reason = True, signal.Signals(signum).name
            if signum == signal.SIGINT:
                tqdm.write("stopping at the next log or checkpoint step, after saving "
                           "(Ctrl-C again: at once, without saving)")

        try:
            previous = {signum: signal.signal(signum, handler) for signum in self.SIGNALS}
        except ValueError:  # not the main thread (e.g. some notebook kernels): no handler
            yield
            return
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)

    def any_process(self) -> bool:
        """Whether any process was asked to stop (a collective: every process calls it)."""
        return parallel.any_process(self.requested)


@dataclasses.dataclass(frozen=True)
class Run:
    """An open run: its workdir, mesh, metric writer (process 0 writes) and checkpointer."""

    workdir: str
    mesh: Mesh
    writer: MetricWriter
    checkpointer: checkpointing.TrainCheckpointer

    @property
    def is_chief(self) -> bool:
        return jax.process_index() == 0


@contextlib.contextmanager
def open_run(config: ml_collections.ConfigDict, workdir: str, *, devices=None) -> Iterator[Run]:
    """Guards and records the workdir (`prepare_workdir`), makes the mesh over `devices`
    (default: all), checks the batch size against it, and opens the writer and the
    checkpointer; closes them (waiting for pending saves) on exit. A save that failed stops
    the run with `checkpointing.CheckpointSaveError`."""
    mesh = parallel.make_mesh(devices)
    parallel.check_batch_size(config.batch_size, mesh)
    prepare_workdir(config, workdir)
    writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
    checkpointer = checkpointing.TrainCheckpointer(
        os.path.join(workdir, checkpointing.CHECKPOINTS_DIR), keep_last=config.checkpoint.keep_last,
        keep_every=config.checkpoint.keep_every, async_save=config.checkpoint.async_save)
    try:
        yield Run(workdir=workdir, mesh=mesh, writer=writer, checkpointer=checkpointer)
    finally:
        try:
            checkpointer.close()  # waits for the save in flight; CheckpointSaveError if it failed
        finally:
            writer.close()


def restore_latest(run: Run, make_state: Callable[[], PyTree]) -> tuple[PyTree | None, int]:
    """(state, step) of the newest readable checkpoint, restored replicated on the run's
    mesh into the shapes of `make_state()` (not run, only traced); (None, 0) when there is
    none. The data position saved with it must be that step: the pipelines resume from it.

    Newer checkpoints whose files are damaged (`checkpointing.UnreadableCheckpointError`)
    are moved aside to WORKDIR/checkpoints_quarantine/<step>-<reason> with a warning and an
    event in metrics.jsonl, never deleted. When no checkpoint is readable, nothing is moved
    and the run stops with a CheckpointError listing what it found."""
    steps = run.checkpointer.all_steps()
    if not steps:
        return None, 0
    replicated = parallel.replicated(run.mesh)
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
                            jax.eval_shape(make_state))
    unreadable: list[checkpointing.UnreadableCheckpointError] = []
    for step in reversed(steps):
        error = None
        try:
            state, run_info = run.checkpointer.restore(step, abstract)
        except checkpointing.UnreadableCheckpointError as e:
            error = e
        if not parallel.any_process(error is not None):  # every process moves on together
            break
        unreadable.append(error or checkpointing.UnreadableCheckpointError(
            run.checkpointer.directory, step, "unreadable on another process", "unreadable"))
    else:
        found = "; ".join(f"{e.step}: {e.reason}" for e in unreadable)
        raise checkpointing.CheckpointError(
            f"no readable checkpoint in {run.checkpointer.directory} (found {found}); nothing was moved: "
            "move the step folders away to train from step 0, or choose a new --workdir")
    if unreadable:
        _move_aside(run, unreadable, resume_step=step)
    if run_info.get("next_step") != step:
        raise checkpointing.CheckpointError(
            f"checkpoint {step} records data position {run_info.get('next_step')}, expected {step}")
    return state, step


def _move_aside(run: Run, unreadable: list[checkpointing.UnreadableCheckpointError], resume_step: int) -> None:
    """Quarantines the unreadable checkpoints (the chief moves, every process rereads)."""
    for error in unreadable:
        moved_to = None
        if run.is_chief:
            moved_to = run.checkpointer.move_aside(error.step, error.tag)
            logging.getLogger(__name__).warning(
                "checkpoint %d is unreadable (%s); moved it to %s and resuming from checkpoint %d",
                error.step, error.reason, moved_to, resume_step)
        run.writer.write_event(error.step, "checkpoint_unreadable", reason=error.reason, moved_to=moved_to)
    parallel.sync_processes("checkpoints moved aside")
    run.checkpointer.reload()


def train_loop(config: ml_collections.ConfigDict, run: Run, *, state: PyTree, start_step: int,
               train_step: Callable[[PyTree, dict, PyTree], tuple[PyTree, dict]], batches: Iterator[dict],
               frozen: PyTree, progress_metrics: Mapping[str, str],
               log_scalars: Callable[[int], dict[str, float]] | None = None,
               after_step: Callable[[int, PyTree], None] | None = None) -> tuple[PyTree, bool]:
    """Trains from `start_step` to `config.num_steps` (see the module doc); returns
    (state, whether it stopped early on SIGTERM).

    train_step(state, sharded batch, frozen) -> (state, metrics) is compiled; metrics are
    logged as train/<name> means over the steps since the last log, with
    train/steps_per_s and train/images_per_s. progress_metrics: progress-bar label ->
    metric name. log_scalars(step): more scalars for each log line. after_step(step, state):
    called after every step's checkpoint, e.g. for samples or evaluations."""
    num_steps = config.num_steps
    stop = StopRequest()
    pending: list[tuple[int, dict]] = []  # (step, device metrics), fetched at log/checkpoint steps
    interval: list[dict[str, float]] = []  # host metrics since the last log line
    interval_start = time.perf_counter()
    progress = tqdm(total=num_steps, initial=start_step, desc=f"train {config.task}", unit="step",
                    disable=not run.is_chief, dynamic_ncols=True)

    def fetch_and_log(done: int) -> None:
        nonlocal interval_start
        for step, device_metrics in pending:
            host = {k: float(v) for k, v in parallel.to_host(device_metrics).items()}
            check_finite(step, host)
            interval.append(host)
        pending.clear()
        if not interval or not (done % config.log_every == 0 or done == num_steps):
            return
        elapsed = time.perf_counter() - interval_start
        scalars = {f"train/{k}": float(np.mean([m[k] for m in interval])) for k in interval[0]}
        if log_scalars is not None:
            scalars.update(log_scalars(done))
        scalars["train/steps_per_s"] = len(interval) / max(elapsed, 1e-9)
        scalars["train/images_per_s"] = scalars["train/steps_per_s"] * config.batch_size
        run.writer.write_scalars(done, scalars)
        progress.set_postfix({label: f"{scalars[f'train/{name}']:.3f}"
                              for label, name in progress_metrics.items()})
        interval.clear()
        interval_start = time.perf_counter()

    stopped = False
    try:
        with stop.installed():
            for step in range(start_step, num_steps):
                batch = parallel.shard_batch(next(batches), run.mesh)
                state, metrics = train_step(state, batch, frozen)
                done = step + 1
                pending.append((done, metrics))
                progress.update(1)
                checkpoint_due = done % config.checkpoint.every == 0 or done == num_steps
                due = done % config.log_every == 0 or checkpoint_due
                if due:
                    fetch_and_log(done)
                stopped = due and stop.any_process()
                if checkpoint_due or stopped:
                    run.checkpointer.save(done, state, {"next_step": done, "seed": config.seed})
                if after_step is not None:
                    after_step(done, state)
                if stopped:
                    run.writer.write_event(done, "stopped", reason=stop.reason or "another process")
                    break
    finally:
        progress.close()
    return state, stopped
