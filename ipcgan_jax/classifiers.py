"""The auxiliary networks: identity AlexNet, age classifier and the independent age evaluator.

`train_classifier(config, workdir)` trains the network of `config.task` (called by
`ipcgan_jax.train.train_and_evaluate`, so `main.py` runs it):

- 'alexnet_identity': AlexNet (conv1..conv5, fc6, fc7) with the identity head
  new_1 -> new_2 on identity labels, from `config.init.bvlc_npy` (ImageNet weights) or from
  scratch. new_2 has `model.alexnet.num_identities` outputs (the GAN checks that shape);
  the training split's K identities take labels 0..K-1, so K must not exceed it. Identity
  accuracy needs faces of identities seen in training, so the test set is a per-image
  held-out part of the training split (`holdout_fraction` of every identity's images,
  seeded; an identity with one image keeps it for training).
- 'age_classifier': the age head age_fc6 -> age_fc7 -> age_fc8 on pool5 of the frozen
  identity trunk (`config.frozen.alexnet`), on age groups, AlexNet input scaling (SPEC §7).
- 'age_evaluator': `ipcgan_jax.models.AgeEvaluator`, a small ResNet with its own input
  scaling ([-1, 1]) and seed, used only to grade generated faces.

Dropout (`model.dropout_rate`) acts on fc6/fc7 or age_fc6/age_fc7 during training only.
Age tasks are tested on `data.test_split` (identity-disjoint for CACD's default split and
the synthetic faces).

Outputs in WORKDIR: checkpoints/ (resumable: rerunning the command continues), metrics.jsonl
and tensorboard/ (train/..., eval/...), report/ (metrics.json, confusion_matrix.json and
.png on the test set), and export/ (`checkpointing.save_variables`), what the GAN and the
evaluation read:
  alexnet_identity -> {"params": conv1..conv5, fc6, fc7, new_1, new_2}
  age_classifier   -> {"params": age_fc6, age_fc7, age_fc8}
  age_evaluator    -> {"params", "batch_stats"}, metadata["architecture"] (see
                      `load_age_evaluator`, `predict_age_groups`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from ipcgan_jax import checkpointing, parallel, preprocessing, visualization
from ipcgan_jax.configlib import ConfigError, validate_config
from ipcgan_jax.metric_writers import MetricWriter
from ipcgan_jax.models import AgeEvaluator, AlexNet

PyTree = Any
TRUNK_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
IDENTITY_LAYERS = TRUNK_LAYERS + ("fc6", "fc7", "new_1", "new_2")
AGE_HEAD_LAYERS = ("age_fc6", "age_fc7", "age_fc8")
EXPORT_DIR = "export"
REPORT_DIR = "report"
EVALUATOR_INPUT_SCALING = ("RGB 0..255 resized to architecture.image_size with TF1 legacy bilinear "
                           "(no antialiasing), then / 127.5 - 1 (range [-1, 1])")
_PIXEL_STD = 64.0
# Confusion matrices up to this many classes are stored dense in JSON; larger ones
# (identities) as their non-zero entries.
_DENSE_CONFUSION_LIMIT = 64


# ----------------------------------------------------------------------------- evaluator API
def build_age_evaluator(architecture: Mapping[str, Any], dtype: Any = jnp.float32) -> AgeEvaluator:
    """The evaluator module from its architecture settings (config.model.evaluator)."""
    return AgeEvaluator(stage_features=tuple(architecture["stage_features"]),
                        blocks_per_stage=int(architecture["blocks_per_stage"]),
                        num_groups=int(architecture["num_groups"]),
                        image_size=int(architecture["image_size"]), dtype=dtype)


def evaluator_input(pixels: jax.Array, image_size: int) -> jax.Array:
    """RGB 0..255 faces (N, H, W, 3), any size and dtype -> the evaluator's input:
    resized to `image_size` (TF1 legacy bilinear, as the training pipeline), in [-1, 1]."""
    return preprocessing.pixels_to_discriminator_input(jnp.asarray(pixels, jnp.float32), image_size)


def load_age_evaluator(path: str) -> tuple[AgeEvaluator, PyTree, dict]:
    """(module, variables, metadata) of an evaluator exported by an 'age_evaluator' run
    (its WORKDIR/export). metadata["architecture"] rebuilds the module; see
    `predict_age_groups` for the input."""
    variables, metadata = checkpointing.load_variables(path)
    if metadata.get("task") != "age_evaluator" or "architecture" not in metadata:
        raise checkpointing.CheckpointError(
            f"{path} is not an exported age evaluator (metadata task {metadata.get('task')!r}); "
            "train one with `python main.py --config=configs/age_evaluator.py --workdir=DIR` "
            "and pass DIR/export")
    return build_age_evaluator(metadata["architecture"]), variables, metadata


def predict_age_groups(module: AgeEvaluator, variables: PyTree, pixels: jax.Array) -> jax.Array:
    """Age-group logits (N, num_groups) for RGB faces `pixels` (N, H, W, 3), uint8 or float
    in 0..255, any size: resized to module.image_size and scaled to [-1, 1]
    (EVALUATOR_INPUT_SCALING). Batch norm uses its running statistics (inference)."""
    return module.apply(variables, evaluator_input(pixels, module.image_size), train=False)


# ----------------------------------------------------------------------------- networks
def _dense(layer: PyTree, x: jax.Array) -> jax.Array:
    return x @ layer["kernel"].astype(x.dtype) + layer["bias"].astype(x.dtype)


def _dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
    if rng is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def _pool5(alexnet: AlexNet, params: PyTree, images: jax.Array) -> jax.Array:
    trunk = {name: params[name] for name in TRUNK_LAYERS}
    pool5 = alexnet.apply({"params": trunk}, images, outputs=("pool5",))["pool5"]
    return pool5.reshape(pool5.shape[0], -1)


# The heads on pool5: (ReLU layers with dropout while training, ReLU layers without, logits).
_IDENTITY_HEAD = (("fc6", "fc7"), ("new_1",), "new_2")
_AGE_HEAD = (("age_fc6", "age_fc7"), (), "age_fc8")


def _head(params: PyTree, pool5: jax.Array, layers: tuple, dropout_rate: float,
          rng: jax.Array | None) -> jax.Array:
    dropped, plain, output = layers
    rngs = jax.random.split(rng, len(dropped)) if rng is not None else (None,) * len(dropped)
    h = pool5
    for name, layer_rng in zip(dropped, rngs):
        h = _dropout(jax.nn.relu(_dense(params[name], h)), dropout_rate, layer_rng)
    for name in plain:
        h = jax.nn.relu(_dense(params[name], h))
    return _dense(params[output], h).astype(jnp.float32)


def alexnet_identity_logits(alexnet: AlexNet, params: PyTree, images: jax.Array, *,
                            dropout_rate: float = 0.0, rng: jax.Array | None = None) -> jax.Array:
    """AlexNet's identity logits (new_2) with optional dropout after fc6 and fc7; without
    dropout equal to `alexnet.apply(..., outputs=("identity_logits",))`."""
    return _head(params, _pool5(alexnet, params, images), _IDENTITY_HEAD, dropout_rate, rng)


def age_head_logits(alexnet: AlexNet, trunk_params: PyTree, head_params: PyTree, images: jax.Array, *,
                    dropout_rate: float = 0.0, rng: jax.Array | None = None) -> jax.Array:
    """Age logits of the age head on the frozen trunk (no gradient into the trunk); without
    dropout equal to `alexnet.apply(..., outputs=("age_logits",))`."""
    pool5 = jax.lax.stop_gradient(_pool5(alexnet, trunk_params, images))
    return _head(head_params, pool5, _AGE_HEAD, dropout_rate, rng)


# ----------------------------------------------------------------------------- tasks
@dataclasses.dataclass(frozen=True)
class _Task:
    """What differs between the three tasks; the training loop is shared."""

    label: str                      # pipeline label: 'identity' | 'age_group'
    image_size: int                 # the pipeline resizes stored faces to this size
    class_names: tuple[str, ...]
    init_variables: Callable[[jax.Array], dict]        # rng -> {"params", "batch_stats"}
    # (variables, frozen, images with AlexNet scaling, dropout rng or None for inference)
    # -> (logits, updated batch_stats, auxiliary age logits or None). The auxiliary age
    # head is trained with the network, weighted by `auxiliary_age_weight` (identity task
    # only; see classifier_defaults); it shares the trunk's forward pass with the logits.
    apply: Callable[..., tuple[jax.Array, PyTree, jax.Array | None]]
    head_layers: tuple[str, ...] = ()
    frozen: PyTree = dataclasses.field(default_factory=dict)
    auxiliary_age_weight: float = 0.0


def _compute_dtype(config: ml_collections.ConfigDict):
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.compute_dtype]


def _build_alexnet(config: ml_collections.ConfigDict) -> AlexNet:
    return AlexNet(dtype=_compute_dtype(config), **config.model.alexnet)


def _alexnet_template(alexnet: AlexNet, size: int) -> PyTree:
    return jax.eval_shape(lambda: alexnet.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                                               outputs=("identity_logits", "age_logits")))["params"]


def _identity_task(config: ml_collections.ConfigDict, classes: np.ndarray,
                   class_names: tuple[str, ...]) -> _Task:
    alexnet = _build_alexnet(config)
    size = config.data.alexnet_size
    if classes.size > config.model.alexnet.num_identities:
        raise ConfigError(
            f"the training split has {classes.size} identities but config key "
            f"'model.alexnet.num_identities' is {config.model.alexnet.num_identities}; raise it")
    rate = config.model.dropout_rate
    age_weight = config.auxiliary_age_weight
    outputs = ("identity_logits", "age_logits") if age_weight else ("identity_logits",)

    # Compiled: op by op, every initialiser would be compiled on its own (seconds each run).
    init_network = jax.jit(lambda rng: alexnet.init(rng, jnp.zeros((1, size, size, 3)), outputs=outputs))

    def init_variables(rng: jax.Array) -> dict:
        params = dict(init_network(rng)["params"])
        # Flax's initialisers assume unit-variance inputs; AlexNet sees 0..255 minus the
        # mean (std about 60), which without this makes the first logits huge.
        params["conv1"] = {**params["conv1"], "kernel": params["conv1"]["kernel"] / _PIXEL_STD}
        if config.init.bvlc_npy:
            from ipcgan_jax.weights import load_bvlc_alexnet
            expect = {"params": jax.eval_shape(lambda: params)}
            params = {**params, **load_bvlc_alexnet(os.path.expanduser(config.init.bvlc_npy), expect=expect)}
        return {"params": dict(params), "batch_stats": {}}

    def apply(variables, frozen, images, rng):
        del frozen
        params = variables["params"]
        dropout_rate = rate if rng is not None else 0.0
        identity_rng, age_rng = jax.random.split(rng) if rng is not None else (None, None)
        # One trunk pass for both heads: a second pass would double the backward pass.
        pool5 = _pool5(alexnet, params, images)
        logits = _head(params, pool5, _IDENTITY_HEAD, dropout_rate, identity_rng)
        age_logits = _head(params, pool5, _AGE_HEAD, dropout_rate, age_rng) if age_weight else None
        return logits, variables["batch_stats"], age_logits

    return _Task(label="identity", image_size=size, class_names=class_names,
                 init_variables=init_variables, apply=apply, head_layers=("new_1", "new_2"),
                 auxiliary_age_weight=age_weight)


def _how_to_make_trunk(key: str) -> str:
    return (f"train it with `python main.py --config=configs/alexnet_identity.py --workdir=DIR` "
            f"and set {key}=DIR/export (a relative path is resolved against this run's --workdir), "
            "or convert the original weights with `python -m ipcgan_jax.convert`")


def load_frozen_trunk(config: ml_collections.ConfigDict, workdir: str) -> PyTree:
    """The identity AlexNet params (conv1..new_2) of `config.frozen.alexnet`, checked against
    config.model.alexnet and data.alexnet_size; a clear error names the command that makes it."""
    key = "frozen.alexnet"
    path = os.path.join(workdir, os.path.expanduser(config.frozen.alexnet))
    try:
        variables, _ = checkpointing.load_variables(path)
    except (checkpointing.CheckpointError, FileNotFoundError) as e:
        raise checkpointing.CheckpointError(f"{key}: {e}; {_how_to_make_trunk(key)}") from None
    params = variables.get("params", {})
    template = _alexnet_template(_build_alexnet(config), config.data.alexnet_size)
    missing = sorted(set(IDENTITY_LAYERS) - set(params))
    mismatched = sorted(name for name in set(IDENTITY_LAYERS) & set(params)
                        if jax.tree.map(np.shape, params[name])
                        != jax.tree.map(lambda s: s.shape, template[name]))
    if missing or mismatched:
        raise checkpointing.CheckpointError(
            f"{key}: the network at {path} does not match config.model.alexnet / "
            f"config.data.alexnet_size (missing layers {missing}, mis-shaped layers {mismatched}); "
            f"{_how_to_make_trunk(key)} with the same model.alexnet and data settings")
    return {name: params[name] for name in IDENTITY_LAYERS}


def _age_head_task(config: ml_collections.ConfigDict, trunk: PyTree) -> _Task:
    alexnet = _build_alexnet(config)
    size = config.data.alexnet_size
    rate = config.model.dropout_rate

    init_network = jax.jit(lambda rng: alexnet.init(rng, jnp.zeros((1, size, size, 3)), outputs=("age_logits",)))

    def init_variables(rng: jax.Array) -> dict:
        params = init_network(rng)["params"]
        return {"params": {name: params[name] for name in AGE_HEAD_LAYERS}, "batch_stats": {}}

    def apply(variables, frozen, images, rng):
        logits = age_head_logits(alexnet, frozen, variables["params"], images,
                                 dropout_rate=rate if rng is not None else 0.0, rng=rng)
        return logits, variables["batch_stats"], None

    return _Task(label="age_group", image_size=size,
                 class_names=tuple(visualization.AGE_GROUP_LABELS[:config.model.alexnet.num_groups]),
                 init_variables=init_variables, apply=apply, frozen=trunk)


def _evaluator_task(config: ml_collections.ConfigDict) -> _Task:
    evaluator = build_age_evaluator(config.model.evaluator, _compute_dtype(config))
    size = evaluator.image_size
    mean = jnp.asarray(preprocessing.MEAN_RGB, jnp.float32)

    init_network = jax.jit(lambda rng: evaluator.init(rng, jnp.zeros((1, size, size, 3)), train=False))

    def init_variables(rng: jax.Array) -> dict:
        variables = init_network(rng)
        return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}

    def apply(variables, frozen, images, rng):
        del frozen
        # The pipeline delivers AlexNet scaling (resized, minus the mean); the evaluator
        # takes the same resized pixels in [-1, 1] (EVALUATOR_INPUT_SCALING).
        scaled = (images + mean) / 127.5 - 1.0
        if rng is None:
            return evaluator.apply(variables, scaled, train=False), variables["batch_stats"], None
        logits, updates = evaluator.apply(variables, scaled, train=True, mutable=["batch_stats"])
        return logits, updates["batch_stats"], None

    return _Task(label="age_group", image_size=size,
                 class_names=tuple(visualization.AGE_GROUP_LABELS[:config.model.evaluator.num_groups]),
                 init_variables=init_variables, apply=apply)


# ----------------------------------------------------------------------------- data
def subset(source, indices: np.ndarray, name: str):
    """The faces of `source` at `indices`, as a FaceSource of their own."""
    indices = np.asarray(indices, np.int64)
    fetch_encoded = source.fetch_encoded
    return dataclasses.replace(
        source, name=name, age_group=source.age_group[indices], identity=source.identity[indices],
        age=source.age[indices], fetch_images=lambda i: source.fetch_images(indices[np.asarray(i)]),
        fetch_encoded=(None if fetch_encoded is None
                       else lambda i: fetch_encoded(indices[np.asarray(i)])))


def per_image_holdout(identity: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, holdout) indices: round(fraction * n) of each identity's n images, seeded,
    held out, but never all of them (every identity keeps at least one training image)."""
    rng = np.random.default_rng([seed, 0x1D])
    train, holdout = [], []
    for value in np.unique(identity):
        indices = rng.permutation(np.flatnonzero(identity == value))
        num_held = min(int(round(fraction * indices.size)), indices.size - 1)
        holdout.append(indices[:num_held])
        train.append(indices[num_held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(holdout))


def _load_sources(config: ml_collections.ConfigDict, faces: tuple[Any, Any] | None):
    """(train faces, test faces) for the task."""
    from ipcgan_jax.data import sources  # TensorFlow is imported only here

    if faces is not None:
        train_faces = faces[0]
    else:
        train_faces = sources.load_faces(config.data, config.data.train_split)
    if config.task != "alexnet_identity":
        test_faces = faces[1] if faces is not None else sources.load_faces(config.data, config.data.test_split)
        return train_faces, test_faces
    train_idx, holdout_idx = per_image_holdout(train_faces.identity, config.holdout_fraction, config.seed)
    if holdout_idx.size == 0:
        raise ValueError(f"{train_faces.name}: holdout_fraction {config.holdout_fraction} holds out no "
                         "image (identities have too few images); raise it")
    return (subset(train_faces, train_idx, f"{train_faces.name} (training images)"),
            subset(train_faces, holdout_idx, f"{train_faces.name} (held-out images)"))


# ----------------------------------------------------------------------------- training
@flax.struct.dataclass
class ClassifierState:
    step: jax.Array
    params: PyTree
    batch_stats: PyTree
    opt_state: optax.OptState


@dataclasses.dataclass(frozen=True)
class TrainedClassifier:
    """What `train_classifier` returns: the exported variables, the test metrics and where
    the export lies."""

    variables: PyTree
    test_metrics: dict
    export_dir: str


def _learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    o = config.optimizer
    if o.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, o.learning_rate, o.warmup_steps,
                                                  max(config.num_steps, o.warmup_steps + 1))
    if o.warmup_steps:
        return optax.linear_schedule(0.0, o.learning_rate, o.warmup_steps)
    return optax.constant_schedule(o.learning_rate)


def _make_optimizer(config: ml_collections.ConfigDict, head_layers: tuple[str, ...]) -> optax.GradientTransformation:
    o = config.optimizer
    schedule = _learning_rate_schedule(config)
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
    # update scales its learning rate.
    scale = lambda params: {k: jax.tree.map(lambda _: multiplier if k in head_layers else 1.0, v)  # noqa: E731
                            for k, v in params.items()}

    def update_fn(updates, state, params=None):
        updates, state = base.update(updates, state, params)
        return jax.tree.map(lambda u, m: u * m, updates, scale(updates)), state

    return optax.GradientTransformation(base.init, update_fn)


def _make_train_step(task: _Task, optimizer: optax.GradientTransformation, seed: int):
    def train_step(state: ClassifierState, batch: dict, frozen: PyTree):
        rng = jax.random.fold_in(jax.random.key(seed), state.step)

        def loss_fn(params):
            logits, batch_stats, age_logits = task.apply(
                {"params": params, "batch_stats": state.batch_stats}, frozen, batch["image"], rng)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
            age_loss = jnp.zeros(())
            if age_logits is not None:
                age_loss = optax.softmax_cross_entropy_with_integer_labels(age_logits, batch["age_group"]).mean()
            return loss + task.auxiliary_age_weight * age_loss, (logits, batch_stats, age_loss)

        (loss, (logits, batch_stats, age_loss)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        state = ClassifierState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                                batch_stats=batch_stats, opt_state=opt_state)
        metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
                   "grad_norm": optax.tree.norm(grads)}
        if task.auxiliary_age_weight:
            metrics["auxiliary_age_loss"] = age_loss
        return state, metrics

    return train_step


def _make_predict(task: _Task):
    num_classes = len(task.class_names)

    def predict(params: PyTree, batch_stats: PyTree, frozen: PyTree, images: jax.Array, labels: jax.Array):
        logits, _, _ = task.apply({"params": params, "batch_stats": batch_stats}, frozen, images, None)
        # Identity outputs beyond the training split's identities stand for nobody.
        logits = logits[:, :num_classes]
        return jnp.argmax(logits, -1), optax.softmax_cross_entropy_with_integer_labels(logits, labels)

    return predict


def _gather(x: jax.Array) -> np.ndarray:
    if jax.process_count() == 1:
        return np.asarray(x)
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def evaluate_split(task: _Task, predict, state: ClassifierState, frozen: PyTree, faces, *,
                   classes: np.ndarray | None, batch_size: int, mesh) -> tuple[dict, np.ndarray]:
    """(metrics, confusion matrix rows=true, columns=predicted) of the whole split."""
    from ipcgan_jax.data import pipeline  # TensorFlow is imported only here

    num_classes = len(task.class_names)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    loss_sum, count = 0.0, 0
    batches = pipeline.eval_batches(faces, batch_size=batch_size, image_size=task.image_size,
                                    alexnet_size=task.image_size, process_index=jax.process_index(),
                                    process_count=jax.process_count())
    for batch in tqdm(batches, total=-(-len(faces) // batch_size), desc=f"evaluate {faces.name}",
                      unit="batch", leave=False, disable=jax.process_index() != 0):
        labels = (pipeline.identity_labels(batch["identity"], classes) if task.label == "identity"
                  else batch["age_group"].astype(np.int32))
        sharded = parallel.shard_batch({"image": batch["source_alexnet"], "label": labels,
                                        "mask": batch["mask"]}, mesh)
        predicted, losses = predict(state.params, state.batch_stats, frozen, sharded["image"], sharded["label"])
        predicted, losses = _gather(predicted), _gather(losses)
        mask, labels = _gather(sharded["mask"]), _gather(sharded["label"])
        np.add.at(confusion, (labels[mask], predicted[mask]), 1)
        loss_sum += float(losses[mask].sum())
        count += int(mask.sum())
    correct = int(np.trace(confusion))
    metrics = {"accuracy": correct / count, "loss": loss_sum / count, "num_images": count}
    if task.label == "age_group":
        groups = np.arange(num_classes)
        metrics["mae_groups"] = float((confusion * np.abs(groups[:, None] - groups[None, :])).sum() / count)
    return metrics, confusion


# ----------------------------------------------------------------------------- reports
def render_confusion_matrix(confusion: np.ndarray, class_names: tuple[str, ...]) -> np.ndarray:
    """uint8 RGB picture of a confusion matrix (rows true, columns predicted), shaded by the
    fraction of each true class; small matrices get labels and counts in the cells."""
    totals = np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fraction = confusion / totals
    num_classes = confusion.shape[0]
    if num_classes > 20:
        shade = (255 - np.round(fraction * 255)).astype(np.uint8)
        return np.repeat(shade[..., None], 3, axis=-1)
    cell, margin = 56, 64
    canvas = Image.new("RGB", (margin + cell * num_classes, margin + cell * num_classes + 16), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    draw.text((margin, 2), "predicted ->   (rows: true)", fill="black", font=font)
    for i, name in enumerate(class_names):
        draw.text((margin + i * cell + 4, 20), name, fill="black", font=font)
        draw.text((4, margin + i * cell + cell // 2 - 6), name, fill="black", font=font)
        for j in range(num_classes):
            level = int(255 - 200 * fraction[i, j])
            box = (margin + j * cell, margin + i * cell, margin + (j + 1) * cell - 1, margin + (i + 1) * cell - 1)
            draw.rectangle(box, fill=(level, level, 255), outline="gray")
            draw.text((box[0] + 6, box[1] + cell // 2 - 6), str(int(confusion[i, j])),
                      fill="white" if fraction[i, j] > 0.6 else "black", font=font)
    return np.asarray(canvas)


def write_report(report_dir: str, metrics: dict, confusion: np.ndarray, class_names: tuple[str, ...],
                 info: dict) -> None:
    """report_dir/metrics.json, confusion_matrix.json and confusion_matrix.png."""
    os.makedirs(report_dir, exist_ok=True)
    with open(os.path.join(report_dir, "metrics.json"), "w") as f:
        json.dump({**info, **metrics}, f, indent=2, sort_keys=True)
    record = {"classes": list(class_names), "rows": "true class", "columns": "predicted class",
              "total": int(confusion.sum()), "correct": int(np.trace(confusion))}
    if len(class_names) <= _DENSE_CONFUSION_LIMIT:
        record["matrix"] = confusion.tolist()
    else:
        rows, cols = np.nonzero(confusion)
        record["nonzero"] = [[int(r), int(c), int(confusion[r, c])] for r, c in zip(rows, cols)]
    with open(os.path.join(report_dir, "confusion_matrix.json"), "w") as f:
        json.dump(record, f, indent=1)
    visualization.save_png(os.path.join(report_dir, "confusion_matrix.png"),
                           render_confusion_matrix(confusion, class_names))


def _export_variables(config: ml_collections.ConfigDict, state: ClassifierState) -> PyTree:
    params = jax.tree.map(np.asarray, parallel.to_host(state.params))
    if config.task == "alexnet_identity":  # without the auxiliary age head, if any
        return {"params": {name: params[name] for name in IDENTITY_LAYERS}}
    if config.task != "age_evaluator":
        return {"params": params}
    variables = {"params": params}
    if state.batch_stats:
        variables["batch_stats"] = jax.tree.map(np.asarray, parallel.to_host(state.batch_stats))
    return variables


def _write_export(workdir: str, variables: PyTree, metadata: dict) -> str:
    """Writes WORKDIR/export; replaces an export of an earlier step of this run (training
    was extended), refuses to touch one that this project did not write."""
    export_dir = os.path.join(workdir, EXPORT_DIR)
    metadata_path = os.path.join(export_dir, checkpointing.METADATA_FILE)
    if os.path.exists(export_dir):
        previous = {}
        if os.path.exists(metadata_path):
            with open(metadata_path) as f:
                previous = json.load(f)
        if previous.get("task") != metadata["task"]:
            raise FileExistsError(f"{export_dir} exists and was not written by a {metadata['task']!r} "
                                  "run; move it away or choose a new --workdir")
        if previous.get("step") == metadata["step"]:
            return export_dir
    staging = export_dir + ".writing"
    is_chief = jax.process_index() == 0
    if is_chief and os.path.exists(staging):
        shutil.rmtree(staging)  # an export interrupted before it completed
    _sync_processes("export staging")
    checkpointing.save_variables(staging, variables, metadata)
    if is_chief:
        if os.path.exists(export_dir):
            shutil.rmtree(export_dir)
        os.replace(staging, export_dir)
    _sync_processes("export")
    return export_dir


def _sync_processes(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


# ----------------------------------------------------------------------------- main loop
def _build_task(config: ml_collections.ConfigDict, train_faces, trunk: PyTree | None
                ) -> tuple[_Task, np.ndarray | None]:
    if config.task == "alexnet_identity":
        from ipcgan_jax.data import pipeline

        classes = pipeline.identity_classes(train_faces)
        names = train_faces.identity_names
        class_names = tuple(names[c] if names is not None and 0 <= c < len(names) else str(c)
                            for c in classes.tolist())
        return _identity_task(config, classes, class_names), classes
    if config.task == "age_classifier":
        return _age_head_task(config, trunk), None
    if config.task == "age_evaluator":
        return _evaluator_task(config), None
    raise ConfigError(f"config key 'task': {config.task!r} is not a classifier task")


def train_classifier(config: ml_collections.ConfigDict, workdir: str, *, devices=None,
                     faces: tuple[Any, Any] | None = None) -> TrainedClassifier:
    """Trains, tests, reports and exports the network of `config.task` (see module doc).

    faces: (train, test) FaceSources to use instead of loading config.data (notebooks,
    benchmarks on other data); for 'alexnet_identity' the test part is then ignored and
    the held-out images come from the training faces as usual.
    Rerunning with the same config and workdir resumes; a finished run only rewrites
    its report (and export, if missing)."""
    from ipcgan_jax import train as gan_train  # the shared workdir guard and SIGTERM handling
    from ipcgan_jax.data import pipeline  # TensorFlow is imported only here

    validate_config(config)
    workdir = os.path.abspath(os.path.expanduser(workdir))
    # ---- set-up (the frozen trunk is checked first, before anything is written)
    trunk = load_frozen_trunk(config, workdir) if config.task == "age_classifier" else None
    train_faces, test_faces = _load_sources(config, faces)
    task, classes = _build_task(config, train_faces, trunk)
    gan_train.prepare_workdir(config, workdir)
    mesh = parallel.make_mesh(devices)
    parallel.check_batch_size(config.batch_size, mesh)
    parallel.check_batch_size(config.eval_batch_size, mesh, key="eval_batch_size")
    is_chief = jax.process_index() == 0
    writer = MetricWriter(workdir, enabled=is_chief)
    frozen = parallel.replicate(task.frozen, mesh)
    optimizer = _make_optimizer(config, task.head_layers)
    schedule = _learning_rate_schedule(config)

    def init(rng: jax.Array) -> ClassifierState:
        variables = task.init_variables(rng)
        return ClassifierState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                               batch_stats=variables["batch_stats"],
                               opt_state=optimizer.init(variables["params"]))

    # ---- state: fresh, or the latest complete checkpoint
    checkpointer = checkpointing.TrainCheckpointer(
        os.path.join(workdir, "checkpoints"), keep_last=config.checkpoint.keep_last,
        keep_every=config.checkpoint.keep_every, async_save=config.checkpoint.async_save)
    replicated = parallel.replicated(mesh)
    state, start_step = gan_train.restore_latest(checkpointer, lambda: init(jax.random.key(config.seed)), mesh)
    if state is None:
        # Initialised on the host (the bvlc weights are host arrays), then replicated.
        state = parallel.replicate(init(jax.random.key(config.seed)), mesh)
        writer.write_event(0, "started", task=config.task, devices=mesh.devices.size,
                           train_images=len(train_faces), test_images=len(test_faces))
    else:
        writer.write_event(start_step, "resumed")

    batch_sharding = parallel.batch_sharded(mesh)
    train_step = jax.jit(_make_train_step(task, optimizer, config.seed), donate_argnums=(0,),
                         in_shardings=(replicated, batch_sharding, replicated),
                         out_shardings=(replicated, replicated))
    predict = jax.jit(_make_predict(task))
    batches = pipeline.classifier_batches(
        train_faces, label=task.label, batch_size=config.batch_size, seed=config.seed,
        num_steps=config.num_steps, image_size=task.image_size, start_step=start_step,
        flip=config.data.flip, process_index=jax.process_index(), process_count=jax.process_count(),
        classes=classes, prefetch=config.data.prefetch)

    def run_eval(step: int) -> tuple[dict, np.ndarray]:
        metrics, confusion = evaluate_split(task, predict, state, frozen, test_faces, classes=classes,
                                            batch_size=config.eval_batch_size, mesh=mesh)
        writer.write_scalars(step, {f"eval/{k}": v for k, v in metrics.items()})
        return metrics, confusion

    # ---- loop
    stop = gan_train._StopRequest()
    pending: list[dict] = []  # device metrics since the last log, fetched at log time
    interval_start = time.perf_counter()
    progress = tqdm(total=config.num_steps, initial=start_step, desc=f"train {config.task}",
                    unit="step", disable=not is_chief, dynamic_ncols=True)

    def flush_metrics(step: int) -> None:
        nonlocal interval_start
        if not pending:
            return
        host = [{k: float(v) for k, v in parallel.to_host(m).items()} for m in pending]
        for offset, values in enumerate(host):
            gan_train._check_finite(step - len(host) + 1 + offset, values)
        elapsed = time.perf_counter() - interval_start
        mean = {f"train/{k}": float(np.mean([m[k] for m in host])) for k in host[0]}
        mean["train/learning_rate"] = float(schedule(step - 1))
        mean["train/steps_per_s"] = len(host) / max(elapsed, 1e-9)
        mean["train/images_per_s"] = mean["train/steps_per_s"] * config.batch_size
        writer.write_scalars(step, mean)
        progress.set_postfix(loss=f"{mean['train/loss']:.3f}", acc=f"{mean['train/accuracy']:.2f}")
        pending.clear()
        interval_start = time.perf_counter()

    stopped = False
    try:
        with stop.installed():
            for step in range(start_step, config.num_steps):
                batch = parallel.shard_batch(next(batches), mesh)
                state, metrics = train_step(state, batch, frozen)
                pending.append(metrics)
                progress.update(1)
                done = step + 1
                checkpoint_due = done % config.checkpoint.every == 0 or done == config.num_steps
                if done % config.log_every == 0 or checkpoint_due:
                    flush_metrics(done)  # also: never checkpoint a non-finite state
                stopping = (done % config.log_every == 0 or checkpoint_due) and stop.any_process()
                if checkpoint_due or stopping:
                    checkpointer.save(done, state, {"next_step": done, "seed": config.seed})
                if done % config.eval_every == 0 and done != config.num_steps:
                    run_eval(done)
                if stopping:
                    writer.write_event(done, "stopped", reason="SIGTERM")
                    stopped = True
                    break
            flush_metrics(config.num_steps)
        checkpointer.wait_until_finished()
        if stopped:
            return TrainedClassifier(variables=_export_variables(config, state), test_metrics={},
                                     export_dir="")
        # ---- final test, report, export
        test_metrics, confusion = run_eval(config.num_steps)
        info = {"task": config.task, "step": config.num_steps, "test_split": test_faces.name,
                "seed": config.seed}
        variables = _export_variables(config, state)
        metadata = {**info, "test_accuracy": test_metrics["accuracy"],
                    "config": json.loads(config.to_json_best_effort())}
        if config.task == "age_evaluator":
            metadata["architecture"] = {k: (list(v) if isinstance(v, tuple) else v)
                                        for k, v in config.model.evaluator.to_dict().items()}
            metadata["input_scaling"] = EVALUATOR_INPUT_SCALING
        if config.task == "alexnet_identity":
            metadata["identity_classes"] = [int(c) for c in classes]
        export_dir = os.path.join(workdir, EXPORT_DIR)
        if is_chief:
            write_report(os.path.join(workdir, REPORT_DIR), test_metrics, confusion, task.class_names, info)
        export_dir = _write_export(workdir, variables, metadata)
        writer.write_event(config.num_steps, "finished", **{f"test_{k}": v for k, v in test_metrics.items()})
        return TrainedClassifier(variables=variables, test_metrics=test_metrics, export_dir=export_dir)
    finally:
        progress.close()
        checkpointer.wait_until_finished()
        checkpointer.close()
        writer.close()

