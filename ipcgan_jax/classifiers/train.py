"""The classifier trainer: `train_classifier(config, workdir)` trains, tests, reports and
exports the network of `config.task` (see the package doc), on the shared run library
(`ipcgan_jax.runlib`)."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state
from tqdm.auto import tqdm

from ipcgan_jax import age_evaluator, parallel
from ipcgan_jax.classifiers import reports, splits, tasks
from ipcgan_jax.configlib import validate_config
from ipcgan_jax.constants import ALEXNET_IDENTITY_LAYERS
from ipcgan_jax.data import batches as data_batches
from ipcgan_jax.data import plan
from ipcgan_jax.runlib import frozen as frozen_networks
from ipcgan_jax.runlib import loop, workdir as run_workdir

PyTree = Any
# What the progress bar shows: label -> metric.
_PROGRESS_METRICS = {"loss": "loss", "acc": "accuracy"}


class ClassifierState(train_state.TrainState):
    """Flax's TrainState (step, params, optimizer) with the BatchNorm statistics; apply_fn
    is the task's `apply`."""

    batch_stats: PyTree


@dataclasses.dataclass(frozen=True)
class TrainedClassifier:
    """What `train_classifier` returns: the exported variables, the test metrics and where
    the export lies."""

    variables: PyTree
    test_metrics: dict
    export_dir: str


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    o = config.optimizer
    if o.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, o.learning_rate, o.warmup_steps,
                                                  max(config.num_steps, o.warmup_steps + 1))
    if o.warmup_steps:
        return optax.linear_schedule(0.0, o.learning_rate, o.warmup_steps)
    return optax.constant_schedule(o.learning_rate)


def make_optimizer(config: ml_collections.ConfigDict, head_layers: tuple[str, ...]) -> optax.GradientTransformation:
    """SGD with momentum or AdamW (weight decay on kernels only), on the configured
    schedule; the layers `head_layers` learn `optimizer.head_learning_rate_multiplier`
    times faster."""
    o = config.optimizer
    schedule = learning_rate_schedule(config)
    kernels = lambda params: jax.tree.map(lambda x: x.ndim > 1, params)  # noqa: E731
    if o.name == "momentum":
        base = optax.chain(optax.add_decayed_weights(o.weight_decay, mask=kernels),
                           optax.sgd(schedule, momentum=o.momentum))
    else:
        base = optax.adamw(schedule, weight_decay=o.weight_decay, mask=kernels)
    multiplier = o.get("head_learning_rate_multiplier", 1.0)
    if not head_layers or multiplier == 1.0:
        return base
    # Both optimizers' updates are linear in the learning rate, so scaling a layer's
    # update scales its learning rate. (Wrapped, not chained, so the optimizer state, and
    # with it the checkpoint, is the base optimizer's.)
    scale = lambda params: {k: jax.tree.map(lambda _: multiplier if k in head_layers else 1.0, v)  # noqa: E731
                            for k, v in params.items()}

    def update_fn(updates, state, params=None):
        updates, state = base.update(updates, state, params)
        return jax.tree.map(lambda u, m: u * m, updates, scale(updates)), state

    return optax.GradientTransformation(base.init, update_fn)


def classification_loss(logits: jax.Array, labels: jax.Array, class_weights: np.ndarray | None) -> jax.Array:
    """Mean softmax cross entropy over the batch, each image's times its class's weight
    when `class_weights` (per class) is given (ClassifierTask.class_weights)."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    if class_weights is not None:
        losses = losses * jnp.asarray(class_weights)[labels]
    return losses.mean()


def make_train_step(task: tasks.ClassifierTask, seed: int) -> Callable:
    """`train_step(state, batch, frozen) -> (state, metrics)` (uncompiled); dropout keys
    are `seed` folded with the step."""

    def train_step(state: ClassifierState, batch: dict, frozen: PyTree):
        rng = jax.random.fold_in(jax.random.key(seed), state.step)

        def loss_fn(params):
            logits, batch_stats, age_logits = state.apply_fn(
                {"params": params, "batch_stats": state.batch_stats}, frozen, batch["image"], rng)
            loss = classification_loss(logits, batch["label"], task.class_weights)
            age_loss = jnp.zeros(())
            if age_logits is not None:
                age_loss = optax.softmax_cross_entropy_with_integer_labels(age_logits, batch["age_group"]).mean()
            return loss + task.auxiliary_age_weight * age_loss, (logits, batch_stats, age_loss)

        (loss, (logits, batch_stats, age_loss)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
        metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
                   "grad_norm": optax.tree.norm(grads)}
        if task.auxiliary_age_weight:
            metrics["auxiliary_age_loss"] = age_loss
        return state, metrics

    return train_step


def make_predict(num_classes: int) -> Callable:
    """`predict(state, frozen, images, labels) -> (predicted class, loss)` per image (uncompiled)."""

    def predict(state: ClassifierState, frozen: PyTree, images: jax.Array, labels: jax.Array):
        logits, _, _ = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats},
                                      frozen, images, None)
        # Identity outputs beyond the training split's identities stand for nobody.
        logits = logits[:, :num_classes]
        return jnp.argmax(logits, -1), optax.softmax_cross_entropy_with_integer_labels(logits, labels)

    return predict


def evaluate_split(task: tasks.ClassifierTask, predict, state: ClassifierState, frozen: PyTree, faces, *,
                   classes: np.ndarray | None, batch_size: int, mesh, backend: str) -> tuple[dict, np.ndarray]:
    """(metrics, confusion matrix rows=true, columns=predicted) of the whole split, read
    with the input `backend` (config.data.backend)."""
    num_classes = len(task.class_names)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    loss_sum, count = 0.0, 0
    batches = data_batches.eval_batches(faces, backend=backend, batch_size=batch_size, image_size=task.image_size,
                                    alexnet_size=task.image_size, process_index=jax.process_index(),
                                    process_count=jax.process_count())
    for batch in tqdm(batches, total=-(-len(faces) // batch_size), desc=f"evaluate {faces.name}",
                      unit="batch", leave=False, disable=jax.process_index() != 0):
        labels = (plan.identity_labels(batch["identity"], classes) if task.label == "identity"
                  else batch["age_group"].astype(np.int32))
        sharded = parallel.shard_batch({"image": batch["source_alexnet"], "label": labels,
                                        "mask": batch["mask"]}, mesh)
        predicted, losses = predict(state, frozen, sharded["image"], sharded["label"])
        predicted, losses = parallel.gather_to_host(predicted), parallel.gather_to_host(losses)
        mask, labels = parallel.gather_to_host(sharded["mask"]), parallel.gather_to_host(sharded["label"])
        np.add.at(confusion, (labels[mask], predicted[mask]), 1)
        loss_sum += float(losses[mask].sum())
        count += int(mask.sum())
    correct = int(np.trace(confusion))
    metrics = {"accuracy": correct / count, "loss": loss_sum / count, "num_images": count}
    if task.label == "age_group":
        groups = np.arange(num_classes)
        metrics["mae_groups"] = float((confusion * np.abs(groups[:, None] - groups[None, :])).sum() / count)
    return metrics, confusion


def export_variables(config: ml_collections.ConfigDict, state: ClassifierState) -> PyTree:
    """The variables a task exports (see the package doc), as numpy on the host."""
    params = jax.tree.map(np.asarray, parallel.to_host(state.params))
    if config.task == "alexnet_identity":  # without the auxiliary age head, if any
        return {"params": {name: params[name] for name in ALEXNET_IDENTITY_LAYERS}}
    if config.task != "age_evaluator":
        return {"params": params}
    variables = {"params": params}
    if state.batch_stats:
        variables["batch_stats"] = jax.tree.map(np.asarray, parallel.to_host(state.batch_stats))
    return variables


def export_metadata(config: ml_collections.ConfigDict, info: dict, test_metrics: dict,
                    classes: np.ndarray | None) -> dict:
    """metadata.json of the export: the run `info`, the test accuracy and the config, plus
    what a reader of this task needs (the evaluator's architecture, the identity classes)."""
    metadata = {**info, "test_accuracy": test_metrics["accuracy"],
                "config": json.loads(config.to_json_best_effort())}
    if config.task == "age_evaluator":
        metadata["architecture"] = {k: (list(v) if isinstance(v, tuple) else v)
                                    for k, v in config.model.evaluator.to_dict().items()}
        metadata["input_scaling"] = age_evaluator.INPUT_SCALING
    if config.task == "alexnet_identity":
        metadata["identity_classes"] = [int(c) for c in classes]
    return metadata


def train_classifier(config: ml_collections.ConfigDict, workdir: str, *, devices=None,
                     faces: tuple[Any, Any] | None = None) -> TrainedClassifier:
    """Trains, tests, reports and exports the network of `config.task` (see the package doc).

    faces: (train, test) FaceSources to use instead of loading config.data (notebooks,
    benchmarks on other data); for 'alexnet_identity' the test part is then ignored and
    the held-out images come from the training faces as usual.
    Rerunning with the same config and workdir resumes; a finished run only rewrites
    its report (and export, if missing)."""
    validate_config(config)
    workdir = os.path.abspath(os.path.expanduser(workdir))
    # ---- set-up (the frozen trunk is checked first, before anything is written)
    trunk = (frozen_networks.load_frozen_alexnet(config, workdir, ("alexnet",))
             if config.task == "age_classifier" else None)
    train_faces, test_faces = splits.train_and_test_faces(config, faces)
    classes = plan.identity_classes(train_faces) if config.task == "alexnet_identity" else None
    task = tasks.build_task(config, train_faces, trunk, classes)
    optimizer = make_optimizer(config, task.head_layers)
    schedule = learning_rate_schedule(config)

    def init(rng: jax.Array) -> ClassifierState:
        variables = task.init_variables(rng)
        return ClassifierState(step=jnp.zeros((), jnp.int32), apply_fn=task.apply, params=variables["params"],
                               tx=optimizer, opt_state=optimizer.init(variables["params"]),
                               batch_stats=variables["batch_stats"])

    with loop.open_run(config, workdir, devices=devices) as run:
        parallel.check_batch_size(config.eval_batch_size, run.mesh, key="eval_batch_size")
        frozen = parallel.replicate(task.frozen, run.mesh)
        # ---- state: fresh, or the latest complete checkpoint
        state, start_step = loop.restore_latest(run, lambda: init(jax.random.key(config.seed)))
        if state is None:
            # Initialised on the host (the bvlc weights are host arrays), then replicated.
            state = parallel.replicate(init(jax.random.key(config.seed)), run.mesh)
            run.writer.write_event(0, "started", task=config.task, devices=run.mesh.devices.size,
                                   train_images=len(train_faces), test_images=len(test_faces))
        else:
            run.writer.write_event(start_step, "resumed")

        replicated = parallel.replicated(run.mesh)
        train_step = jax.jit(make_train_step(task, config.seed), donate_argnums=(0,),
                             in_shardings=(replicated, parallel.batch_sharded(run.mesh), replicated),
                             out_shardings=(replicated, replicated))
        predict = jax.jit(make_predict(len(task.class_names)))
        batches = data_batches.classifier_batches(
            train_faces, backend=config.data.backend, label=task.label, batch_size=config.batch_size,
            seed=config.seed, num_steps=config.num_steps, image_size=task.image_size, start_step=start_step,
            flip=config.data.flip, process_index=jax.process_index(), process_count=jax.process_count(),
            classes=classes, prefetch=config.data.prefetch)

        def test(step: int, state: ClassifierState) -> tuple[dict, np.ndarray]:
            metrics, confusion = evaluate_split(task, predict, state, frozen, test_faces, classes=classes,
                                                batch_size=config.eval_batch_size, mesh=run.mesh,
                                                backend=config.data.backend)
            run.writer.write_scalars(step, {f"eval/{k}": v for k, v in metrics.items()})
            return metrics, confusion

        def after_step(step: int, state: ClassifierState) -> None:
            if step % config.eval_every == 0 and step != config.num_steps:
                test(step, state)

        state, stopped = loop.train_loop(
            config, run, state=state, start_step=start_step, train_step=train_step, batches=batches,
            frozen=frozen, progress_metrics=_PROGRESS_METRICS, after_step=after_step,
            log_scalars=lambda step: {"train/learning_rate": float(schedule(step - 1))})
        variables = export_variables(config, state)
        if stopped:
            return TrainedClassifier(variables=variables, test_metrics={}, export_dir="")
        run.checkpointer.wait_until_finished()
        # ---- final test, report, export
        test_metrics, confusion = test(config.num_steps, state)
        info = {"task": config.task, "step": config.num_steps, "test_split": test_faces.name,
                "seed": config.seed}
        if run.is_chief:
            reports.write_report(os.path.join(workdir, reports.REPORT_DIR), test_metrics, confusion,
                                 task.class_names, info)
        metadata = export_metadata(config, info, test_metrics, classes)
        export_dir = run_workdir.write_export(workdir, variables, metadata)
        run.writer.write_event(config.num_steps, "finished", **{f"test_{k}": v for k, v in test_metrics.items()})
    return TrainedClassifier(variables=variables, test_metrics=test_metrics, export_dir=export_dir)
