"""Training entry point: `train_and_evaluate(config, workdir)`.

`main.py` and notebooks call the same function. It dispatches on `config.task`:
'gan' trains IPCGAN (below); 'alexnet_identity', 'age_classifier' and 'age_evaluator'
train the auxiliary networks (ipcgan_jax.classifiers); 'eval' evaluates a trained
generator (ipcgan_jax.evaluation).

The GAN trainer, in sections: workdir and config checks; data; frozen networks; state
(fresh or restored); the compiled step; the loop with logging, samples, checkpoints and
preemption handling.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from ipcgan_jax import checkpointing, gan, parallel, preprocessing, visualization
from ipcgan_jax.configlib import ConfigError, validate_config
from ipcgan_jax.metric_writers import MetricWriter

PyTree = Any
CONFIG_FILE = "config.json"
# What a run writes into its workdir; anything else there is the user's and untouched.
# Settings a resumed run may change: they do not alter the training trajectory (the data
# schedule does not depend on num_steps, so training can be extended).
RESUMABLE_CHANGES = frozenset({"num_steps", "log_every", "sample_every", "checkpoint.keep_last",
                               "checkpoint.keep_every", "checkpoint.async_save", "data.prefetch"})


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


# ----------------------------------------------------------------------------- workdir
def prepare_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Creates `workdir`, records the config, and refuses to resume under another config
    (except for `RESUMABLE_CHANGES`, e.g. a larger num_steps to extend training).

    A workdir holding a `checkpoints/` folder without this project's config file was not
    written by a run of this project: refuse rather than touch it."""
    os.makedirs(workdir, exist_ok=True)
    config_path = os.path.join(workdir, CONFIG_FILE)
    current = json.loads(config.to_json_best_effort(sort_keys=True))
    if os.path.exists(config_path):
        with open(config_path) as f:
            recorded = json.load(f)
        changed = sorted(_diff_keys(recorded, current) - RESUMABLE_CHANGES)
        if changed:
            raise ConfigError(
                f"{workdir} holds a run with a different config (changed keys: {', '.join(changed)}); "
                "resume it with the same config or choose a new --workdir")
        if recorded != current and jax.process_index() == 0:
            with open(config_path, "w") as f:
                json.dump(current, f, indent=2, sort_keys=True)
        return
    if os.path.exists(os.path.join(workdir, "checkpoints")):
        raise ConfigError(f"{workdir}/checkpoints exists but was not written by ipcgan_jax "
                          f"(no {CONFIG_FILE}); choose a new --workdir")
    if jax.process_index() == 0:
        with open(config_path, "w") as f:
            json.dump(current, f, indent=2, sort_keys=True)


def _diff_keys(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = set()
        for key in set(a) | set(b):
            out |= _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return set() if a == b else {prefix.rstrip(".")}


# ----------------------------------------------------------------------------- frozen nets
def load_frozen_alexnet(config: ml_collections.ConfigDict, workdir: str) -> PyTree:
    """The frozen AlexNet params: identity trunk + head from `frozen.alexnet`, the age
    head from `frozen.age_classifier`, checked against the configured network.

    Relative paths are resolved against `workdir` (the demo trains its own networks into
    sub-folders of its workdir)."""
    template = jax.eval_shape(
        gan.build_alexnet(config).init, jax.random.key(0),
        jnp.zeros((1, config.data.alexnet_size, config.data.alexnet_size, 3)))["params"]
    params = {}
    sources = (("frozen.alexnet", config.frozen.alexnet, "configs/alexnet_identity.py"),
               ("frozen.age_classifier", config.frozen.age_classifier, "configs/age_classifier.py"))
    for key, path, maker in sources:
        how = (f"train it with `python main.py --config={maker} --workdir=DIR` (then set {key}=DIR/export) "
               "or convert the original weights with `python -m ipcgan_jax.convert`")
        if not path:
            raise checkpointing.CheckpointError(f"config key {key!r} is empty: it must name an exported network; {how}")
        try:
            variables, _ = checkpointing.load_variables(os.path.join(workdir, os.path.expanduser(path)))
        except (checkpointing.CheckpointError, FileNotFoundError) as e:
            raise checkpointing.CheckpointError(f"{key}: {e}; {how}") from None
        params.update(variables["params"])
    needed = set(template)
    missing = sorted(needed - set(params))
    mismatched = sorted(k for k in needed & set(params)
                        if jax.tree.map(np.shape, params[k]) != jax.tree.map(lambda s: s.shape, template[k]))
    if missing or mismatched:
        raise checkpointing.CheckpointError(
            f"frozen AlexNet does not match config.model.alexnet / config.data.alexnet_size: "
            f"missing layers {missing}, mis-shaped layers {mismatched}")
    return {k: params[k] for k in template}


# ----------------------------------------------------------------------------- resume
def restore_latest(checkpointer: checkpointing.TrainCheckpointer, make_state, mesh) -> tuple[PyTree | None, int]:
    """(state, step) of the latest complete checkpoint, restored replicated on `mesh` into
    the shapes of `make_state()` (not run, only traced); (None, 0) when there is none.
    The data position saved with it must be that step: the pipelines resume from it."""
    step = checkpointer.latest_step()
    if step is None:
        return None, 0
    replicated = parallel.replicated(mesh)
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
                            jax.eval_shape(make_state))
    state, run_info = checkpointer.restore(step, abstract)
    if run_info.get("next_step") != step:
        raise checkpointing.CheckpointError(
            f"checkpoint {step} records data position {run_info.get('next_step')}, expected {step}")
    return state, step


# ----------------------------------------------------------------------------- preemption
class _StopRequest:
    """Set by SIGTERM (cluster preemption) so the loop saves and exits cleanly."""

    def __init__(self):
        self.requested = False

    @contextlib.contextmanager
    def installed(self):
        def handler(signum, frame):
            self.requested = True

        try:
            previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread (e.g. some notebook kernels): no handler
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def any_process(self) -> bool:
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils
        flags = multihost_utils.process_allgather(np.asarray(self.requested))
        return bool(np.any(flags))


# ----------------------------------------------------------------------------- GAN
def _check_finite(step: int, metrics: dict[str, float]) -> None:
    bad = [k for k, v in metrics.items() if not np.isfinite(v)]
    if bad:
        raise NonFiniteLossError(
            f"non-finite {', '.join(sorted(bad))} at step {step}; stopping (the last good "
            "checkpoint is kept)")


def _sample_sheet(generate, g_variables, sample_images: np.ndarray, config, mesh) -> np.ndarray:
    """Rows: fixed source faces; columns: the input, then the output for each age group."""
    size = config.data.image_size
    pixels = preprocessing.legacy_resize_bilinear(jnp.asarray(sample_images, jnp.float32), size, size)
    g_input = pixels - jnp.asarray(preprocessing.MEAN_RGB)
    groups = config.model.generator.num_groups
    columns = [np.asarray(jnp.clip(jnp.round(pixels), 0, 255).astype(jnp.uint8))]
    for group in range(groups):
        age_group = jnp.full((g_input.shape[0],), group, jnp.int32)
        columns.append(np.asarray(preprocessing.generator_output_to_pixels(
            generate(g_variables, g_input, age_group))))
    rows = [[col[i] for col in columns] for i in range(g_input.shape[0])]
    titles = ["input"] + list(visualization.AGE_GROUP_LABELS[:groups])
    return visualization.make_grid(rows, column_titles=titles)


def train_gan(config: ml_collections.ConfigDict, workdir: str, *, devices=None) -> gan.GanState:
    """Trains IPCGAN per SPEC §5-6 and returns the final state (on host)."""
    from ipcgan_jax.data import pipeline, sources  # TensorFlow is imported only here

    # ---- set-up
    prepare_workdir(config, workdir)
    mesh = parallel.make_mesh(devices)
    parallel.check_batch_size(config.batch_size, mesh)
    is_chief = jax.process_index() == 0
    writer = MetricWriter(workdir, enabled=is_chief)
    samples_dir = os.path.join(workdir, "samples")
    os.makedirs(samples_dir, exist_ok=True)

    # ---- data
    train_faces = sources.load_faces(config.data, config.data.train_split)
    test_faces = sources.load_faces(config.data, config.data.test_split)
    sample_indices = np.flatnonzero(np.isin(test_faces.age_group, config.data.source_groups))
    sample_images = test_faces.images(sample_indices[:config.num_sample_faces])

    # ---- frozen networks (replicated, passed to the step, never checkpointed)
    frozen = parallel.replicate(load_frozen_alexnet(config, workdir), mesh)

    # ---- state: fresh, or the latest complete checkpoint
    checkpointer = checkpointing.TrainCheckpointer(
        os.path.join(workdir, "checkpoints"), keep_last=config.checkpoint.keep_last,
        keep_every=config.checkpoint.keep_every, async_save=config.checkpoint.async_save)
    replicated = parallel.replicated(mesh)
    init = jax.jit(lambda rng: gan.init_state(config, rng), out_shardings=replicated)
    state, start_step = restore_latest(checkpointer, lambda: init(jax.random.key(config.seed)), mesh)
    if state is None:
        state = init(jax.random.key(config.seed))
        writer.write_event(0, "started", devices=mesh.devices.size, processes=jax.process_count())
    else:
        writer.write_event(start_step, "resumed")

    # ---- compiled step and sampler
    batch_sharding = parallel.batch_sharded(mesh)
    train_step = jax.jit(gan.make_train_step(config), donate_argnums=(0,),
                         in_shardings=(replicated, batch_sharding, replicated),
                         out_shardings=(replicated, replicated))
    generate = jax.jit(gan.make_generate(config))

    batches: Iterator[dict] = pipeline.gan_batches(
        train_faces, batch_size=config.batch_size, image_size=config.data.image_size,
        alexnet_size=config.data.alexnet_size, seed=config.seed, num_steps=config.num_steps,
        start_step=start_step, source_groups=tuple(config.data.source_groups),
        mixed_age=config.data.mixed_age, flip=config.data.flip,
        process_index=jax.process_index(), process_count=jax.process_count(),
        prefetch=config.data.prefetch)

    def save(step: int) -> None:
        checkpointer.save(step, state, {"next_step": step, "seed": config.seed})

    def write_samples(step: int) -> None:
        if not is_chief or not len(sample_images):
            return
        # Host copies: the chief alone samples, and a computation on the global arrays
        # would have to run on the devices of every process.
        g_vars = parallel.to_host({"params": state.g_params, "batch_stats": state.g_batch_stats})
        sheet = _sample_sheet(generate, g_vars, sample_images, config, mesh)
        visualization.save_png(os.path.join(samples_dir, f"step_{step:07d}.png"), sheet)
        writer.write_image(step, "samples", sheet)

    # ---- loop
    stop = _StopRequest()
    pending = None  # metrics of the previous step, fetched one step late to keep dispatch async
    interval_metrics: list[dict] = []
    interval_start = time.perf_counter()
    step = start_step
    progress = tqdm(total=config.num_steps, initial=start_step, desc="train gan", unit="step",
                    disable=not is_chief, dynamic_ncols=True)

    def drain(pending_item) -> None:
        nonlocal interval_start
        done_step, device_metrics = pending_item
        host = {k: float(v) for k, v in parallel.to_host(device_metrics).items()}
        _check_finite(done_step, host)
        interval_metrics.append(host)
        if done_step % config.log_every == 0 or done_step == config.num_steps:
            elapsed = time.perf_counter() - interval_start
            mean = {f"train/{k}": float(np.mean([m[k] for m in interval_metrics])) for k in host}
            steps_per_s = len(interval_metrics) / max(elapsed, 1e-9)
            mean["train/steps_per_s"] = steps_per_s
            mean["train/images_per_s"] = steps_per_s * config.batch_size
            writer.write_scalars(done_step, mean)
            progress.set_postfix(d=f"{host['d_loss']:.3f}", adv=f"{host['g_adversarial_loss']:.3f}",
                                 age=f"{host['g_age_loss']:.3f}")
            interval_metrics.clear()
            interval_start = time.perf_counter()

    try:
        with stop.installed():
            if start_step == 0:
                write_samples(0)
            for step in range(start_step, config.num_steps):
                batch = parallel.shard_batch(next(batches), mesh)
                state, metrics = train_step(state, batch, frozen)
                if pending is not None:
                    drain(pending)
                pending = (step + 1, metrics)
                progress.update(1)
                done = step + 1
                checkpoint_due = done % config.checkpoint.every == 0 or done == config.num_steps
                stopping = (done % config.log_every == 0 or checkpoint_due) and stop.any_process()
                if checkpoint_due or stopping:
                    drain(pending)  # never checkpoint a non-finite state
                    pending = None
                    save(done)
                if done % config.sample_every == 0:
                    write_samples(done)
                if stopping:
                    writer.write_event(done, "stopped", reason="SIGTERM")
                    break
            if pending is not None:
                drain(pending)
    finally:
        progress.close()
        checkpointer.wait_until_finished()
        checkpointer.close()
        writer.close()
    return parallel.to_host(state)


# ----------------------------------------------------------------------------- dispatch
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, devices=None) -> Any:
    """Runs `config.task` in `workdir` (resuming if it holds a run); see the module doc."""
    validate_config(config)
    workdir = os.path.abspath(os.path.expanduser(workdir))
    if config.task == "gan":
        for name, sub_config in config.get("pretrain", {}).items():
            _pretrain(name, sub_config, config, workdir, devices)
        return train_gan(config, workdir, devices=devices)
    if config.task in ("alexnet_identity", "age_classifier", "age_evaluator"):
        from ipcgan_jax import classifiers
        return classifiers.train_classifier(config, workdir, devices=devices)
    if config.task == "eval":
        from ipcgan_jax import evaluation
        return evaluation.evaluate(config, workdir)
    raise ConfigError(f"config key 'task': unknown task {config.task!r}")


def _pretrain(name: str, sub_config: ml_collections.ConfigDict, gan_config: ml_collections.ConfigDict,
              workdir: str, devices) -> None:
    """Trains an auxiliary network into WORKDIR/<name> unless its export already exists."""
    sub_workdir = os.path.join(workdir, name)
    if not os.path.isdir(os.path.join(sub_workdir, "export", checkpointing.VARIABLES_DIR)):
        train_and_evaluate(sub_config, sub_workdir, devices=devices)
