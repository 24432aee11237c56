"""The IPCGAN trainer: `train_gan(config, workdir)` (task 'gan', run by `ipcgan_jax.tasks`).

In order: the frozen networks (checked before anything is written); the run (workdir
guard, mesh, writer, checkpointer: `ipcgan_jax.runlib`); data; the state, fresh or the
latest checkpoint; the compiled step; the shared training loop, writing sample sheets
(fixed test faces aged to every group) every `sample_every` steps.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ipcgan_jax import gan, parallel, preprocessing, visualization
from ipcgan_jax.constants import AGE_GROUP_LABELS, CAFFE_MEAN_BGR
from ipcgan_jax.data import batches as data_batches
from ipcgan_jax.data import sources
from ipcgan_jax.runlib import frozen as frozen_networks
from ipcgan_jax.runlib import loop

SAMPLES_DIR = "samples"
# What the progress bar shows: label -> metric.
_PROGRESS_METRICS = {"d": "d_loss", "adv": "g_adversarial_loss", "age": "g_age_loss"}


def sample_sheet(generate, g_variables, sample_images: np.ndarray,
                 config: ml_collections.ConfigDict) -> np.ndarray:
    """Rows: fixed source faces; columns: the input, then the output for each age group."""
    size = config.data.image_size
    pixels = preprocessing.legacy_resize_bilinear(jnp.asarray(sample_images, jnp.float32), size, size)
    g_input = pixels - jnp.asarray(CAFFE_MEAN_BGR)
    groups = config.model.generator.num_groups
    columns = [np.asarray(jnp.clip(jnp.round(pixels), 0, 255).astype(jnp.uint8))]
    for group in range(groups):
        age_group = jnp.full((g_input.shape[0],), group, jnp.int32)
        columns.append(np.asarray(preprocessing.generator_output_to_pixels(
            generate(g_variables, g_input, age_group))))
    rows = [[col[i] for col in columns] for i in range(g_input.shape[0])]
    titles = ["input"] + list(AGE_GROUP_LABELS[:groups])
    return visualization.make_grid(rows, column_titles=titles)


def train_gan(config: ml_collections.ConfigDict, workdir: str, *, devices=None) -> gan.GanState:
    """Trains IPCGAN per docs/faithfulness.md §7-§10 in `workdir` (resuming the run there,
    if any) and returns the final state (on host)."""
    frozen_host = frozen_networks.load_frozen_alexnet(config, workdir)
    with loop.open_run(config, workdir, devices=devices) as run:
        samples_dir = os.path.join(workdir, SAMPLES_DIR)
        os.makedirs(samples_dir, exist_ok=True)

        # ---- data
        train_faces = sources.load_faces(config.data, config.data.train_split)
        test_faces = sources.load_faces(config.data, config.data.test_split)
        sample_indices = test_faces.indices_of_groups(config.data.source_groups)
        sample_images = test_faces.images(sample_indices[:config.num_sample_faces])

        # ---- state: fresh, or the latest complete checkpoint; the frozen networks are
        # replicated, passed to the step and never checkpointed
        frozen = parallel.replicate(frozen_host, run.mesh)
        replicated = parallel.replicated(run.mesh)
        init = jax.jit(lambda rng: gan.init_state(config, rng), out_shardings=replicated)
        state, start_step = loop.restore_latest(run, lambda: init(jax.random.key(config.seed)))
        if state is None:
            state = init(jax.random.key(config.seed))
            run.writer.write_event(0, "started", devices=run.mesh.devices.size, processes=jax.process_count())
        else:
            run.writer.write_event(start_step, "resumed")

        # ---- compiled step and sampler
        train_step = jax.jit(gan.make_train_step(config), donate_argnums=(0,),
                             in_shardings=(replicated, parallel.batch_sharded(run.mesh), replicated),
                             out_shardings=(replicated, replicated))
        generate = jax.jit(gan.make_generate(config))
        batches = data_batches.gan_batches(
            train_faces, backend=config.data.backend, batch_size=config.batch_size,
            image_size=config.data.image_size, alexnet_size=config.data.alexnet_size, seed=config.seed,
            num_steps=config.num_steps,
            start_step=start_step, source_groups=tuple(config.data.source_groups),
            mixed_age=config.data.mixed_age, flip=config.data.flip,
            process_index=jax.process_index(), process_count=jax.process_count(),
            prefetch=config.data.prefetch)

        def write_samples(step: int, state: gan.GanState) -> None:
            if not run.is_chief or not len(sample_images):
                return
            # Host copies: the chief alone samples, and a computation on the global arrays
            # would have to run on the devices of every process.
            g_vars = parallel.to_host(gan.sampling_variables(state))
            sheet = sample_sheet(generate, g_vars, sample_images, config)
            visualization.save_png_beside(os.path.join(samples_dir, f"step_{step:07d}.png"), sheet)
            run.writer.write_images(step, {"samples": sheet})

        def after_step(step: int, state: gan.GanState) -> None:
            if step % config.sample_every == 0:
                write_samples(step, state)

        if start_step == 0:
            write_samples(0, state)
        state, _ = loop.train_loop(config, run, state=state, start_step=start_step, train_step=train_step,
                                   batches=batches, frozen=frozen, progress_metrics=_PROGRESS_METRICS,
                                   after_step=after_step)
    return parallel.to_host(state)
