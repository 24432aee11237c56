"""The task router: `train_and_evaluate(config, workdir)`, what `main.py` and the
notebook call.

It validates the config, runs the `config.pretrain` sub-runs (each into WORKDIR/<name>,
skipped once exported: the demo trains its own frozen networks first), then the task:

  gan                 IPCGAN (`ipcgan_jax.train`)
  alexnet_identity,   the auxiliary networks (`ipcgan_jax.classifiers`)
  age_classifier,
  age_evaluator
  eval                evaluation of a trained generator (`ipcgan_jax.evaluation`)

Rerunning with the same config and workdir resumes where the run stopped. Training tasks
hold WORKDIR/run.lock while they run (`ipcgan_jax.runlib.lock`): one writer per workdir.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import ml_collections

from ipcgan_jax import evaluation, train
from ipcgan_jax.classifiers import train as classifier_train
from ipcgan_jax.configlib import CLASSIFIER_TASKS, ConfigError, validate_config
from ipcgan_jax.runlib.lock import workdir_lock
from ipcgan_jax.runlib.workdir import check_export_dir, has_export, prepare_workdir


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, devices=None,
                       take_over_lock: bool = False) -> Any:
    """Runs `config.task` in `workdir` (see the module doc) on `devices` (default: all).

    take_over_lock: take over a workdir lock left by a run on another host (which cannot
    be checked from here); locks of dead processes on this host are taken over anyway.
    Returns what the task's runner returns: the GAN's final state, a
    `classifiers.train.TrainedClassifier`, or the evaluation's results."""
    validate_config(config)
    workdir = os.path.abspath(os.path.expanduser(workdir))
    if config.task == "eval":  # reads the run, writes only fresh folders: no lock
        return evaluation.evaluate(config, workdir)
    with workdir_lock(workdir, take_over=take_over_lock):
        return _train(config, workdir, devices=devices, take_over_lock=take_over_lock)


def _train(config: ml_collections.ConfigDict, workdir: str, *, devices, take_over_lock: bool) -> Any:
    # The workdir is checked before its nested runs write into it: a foreign one (another
    # task's run, another config's checkpoints, a user's export/) is refused first.
    prepare_workdir(config, workdir)
    if config.task in CLASSIFIER_TASKS:
        check_export_dir(workdir, config.task)
    for name, sub_config in config.get("pretrain", {}).items():
        if sub_config.data.name != config.data.name:  # e.g. --config.data.name changed the GAN's alone
            logging.getLogger(__name__).warning(
                "pretrain.%s trains on data %r, the GAN on %r (set --config.pretrain.%s.data.name to change it)",
                name, sub_config.data.name, config.data.name, name)
        sub_workdir = os.path.join(workdir, name)
        if not has_export(sub_workdir):
            result = train_and_evaluate(sub_config, sub_workdir, devices=devices, take_over_lock=take_over_lock)
            if not has_export(sub_workdir):  # stopped early (SIGTERM): the next run needs its export
                print(f"stopped during pretrain.{name} (no export yet); rerun the same command to resume")
                return result
    if config.task == "gan":
        return train.train_gan(config, workdir, devices=devices)
    if config.task in CLASSIFIER_TASKS:
        return classifier_train.train_classifier(config, workdir, devices=devices)
    raise ConfigError(f"config key 'task': unknown task {config.task!r}")
