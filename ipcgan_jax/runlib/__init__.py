"""The run library: what the GAN trainer and the classifier trainer share.

  workdir   the workdir guard (config.json, resumable changes) and atomic exports
  lock      one writer per workdir (WORKDIR/run.lock; stale locks taken over)
  frozen    the frozen AlexNet parts a run reads, checked against its config
  loop      opening a run (mesh, metric writer, checkpointer), restoring the newest
            readable checkpoint, preemption, finite checks, and the training loop's skeleton

Multi-host helpers (barriers, gathers) are in `ipcgan_jax.parallel`.
"""
