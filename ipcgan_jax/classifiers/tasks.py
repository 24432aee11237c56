"""What differs between the three classifier tasks, as a `ClassifierTask`: the labels,
the input size, the class names, the initial variables and the forward pass. The
training loop, the test and the export are shared (`classifiers.train`)."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ipcgan_jax import age_evaluator, gan
from ipcgan_jax.classifiers import heads
from ipcgan_jax.configlib import ConfigError
from ipcgan_jax.constants import (AGE_GROUP_LABELS, ALEXNET_AGE_HEAD_LAYERS, ALEXNET_IDENTITY_LAYERS,
                                  BVLC_ALEXNET_LAYERS, CAFFE_MEAN_BGR)
from ipcgan_jax.weights.bvlc import load_bvlc_alexnet

PyTree = Any
# Flax's initialisers assume unit-variance inputs; AlexNet sees 0..255 minus the mean
# (std about 60), which without scaling conv1 makes the first logits huge.
_PIXEL_STD = 64.0
# The identity layers ImageNet's AlexNet lacks (trained with optimizer.head_learning_rate_multiplier).
_NEW_IDENTITY_LAYERS = tuple(name for name in ALEXNET_IDENTITY_LAYERS if name not in BVLC_ALEXNET_LAYERS)


@dataclasses.dataclass(frozen=True)
class ClassifierTask:
    """What differs between the three tasks; the training loop is shared."""

    label: str                      # pipeline label: 'identity' | 'age_group'
    image_size: int                 # the pipeline resizes stored faces to this size
    class_names: tuple[str, ...]
    init_variables: Callable[[jax.Array], dict]        # rng -> {"params", "batch_stats"}
    # (variables, frozen, images with AlexNet scaling, dropout rng or None for inference)
    # -> (logits, updated batch_stats, auxiliary age logits or None). The auxiliary age
    # head is trained with the network, weighted by `auxiliary_age_weight` (identity task
    # only; see the classifier configs); it shares the trunk's forward pass with the logits.
    apply: Callable[..., tuple[jax.Array, PyTree, jax.Array | None]]
    head_layers: tuple[str, ...] = ()
    frozen: PyTree = dataclasses.field(default_factory=dict)
    auxiliary_age_weight: float = 0.0
    # Per-class weights of the training loss (config class_weighting); None = unweighted.
    class_weights: np.ndarray | None = None


def identity_task(config: ml_collections.ConfigDict, classes: np.ndarray,
                  class_names: tuple[str, ...]) -> ClassifierTask:
    """AlexNet trained on identity labels 0..len(classes)-1, optionally with the auxiliary
    age head."""
    alexnet = gan.build_alexnet(config)
    size = config.data.alexnet_size
    if classes.size > config.model.alexnet.num_identities:
        raise ConfigError(
            f"the training split has {classes.size} identities but config key "
            f"'model.alexnet.num_identities' is {config.model.alexnet.num_identities}; raise it")
    identity_head = heads.identity_head(alexnet, config.model.dropout_rate)
    age_weight = config.auxiliary_age_weight
    age_head = heads.age_head(alexnet, config.model.dropout_rate) if age_weight else None
    outputs = ("identity_logits", "age_logits") if age_weight else ("identity_logits",)

    # Compiled: op by op, every initialiser would be compiled on its own (seconds each run).
    init_network = jax.jit(lambda rng: alexnet.init(rng, jnp.zeros((1, size, size, 3)), outputs=outputs))

    def init_variables(rng: jax.Array) -> dict:
        params = dict(init_network(rng)["params"])
        params["conv1"] = {**params["conv1"], "kernel": params["conv1"]["kernel"] / _PIXEL_STD}
        if config.init.bvlc_npy:
            expect = {"params": jax.eval_shape(lambda: params)}
            params = {**params, **load_bvlc_alexnet(os.path.expanduser(config.init.bvlc_npy), expect=expect)}
        return {"params": dict(params), "batch_stats": {}}

    def apply(variables, frozen, images, rng):
        del frozen
        params = variables["params"]
        identity_rng, age_rng = jax.random.split(rng) if rng is not None else (None, None)
        # One trunk pass for both heads: a second pass would double the backward pass.
        pool5 = heads.pool5_features(alexnet, params, images)
        logits = heads.apply_head(identity_head, params, pool5, identity_rng)
        age_logits = heads.apply_head(age_head, params, pool5, age_rng) if age_head else None
        return logits, variables["batch_stats"], age_logits

    return ClassifierTask(label="identity", image_size=size, class_names=class_names,
                          init_variables=init_variables, apply=apply, head_layers=_NEW_IDENTITY_LAYERS,
                          auxiliary_age_weight=age_weight)


def age_head_task(config: ml_collections.ConfigDict, trunk: PyTree) -> ClassifierTask:
    """The age head on the frozen identity trunk `trunk` (AlexNet params)."""
    alexnet = gan.build_alexnet(config)
    size = config.data.alexnet_size
    rate = config.model.dropout_rate

    init_network = jax.jit(lambda rng: alexnet.init(rng, jnp.zeros((1, size, size, 3)), outputs=("age_logits",)))

    def init_variables(rng: jax.Array) -> dict:
        params = init_network(rng)["params"]
        return {"params": {name: params[name] for name in ALEXNET_AGE_HEAD_LAYERS}, "batch_stats": {}}

    def apply(variables, frozen, images, rng):
        logits = heads.age_head_logits(alexnet, frozen, variables["params"], images,
                                       dropout_rate=rate if rng is not None else 0.0, rng=rng)
        return logits, variables["batch_stats"], None

    return ClassifierTask(label="age_group", image_size=size,
                          class_names=AGE_GROUP_LABELS[:config.model.alexnet.num_groups],
                          init_variables=init_variables, apply=apply, frozen=trunk)


def balanced_class_weights(labels: np.ndarray, num_classes: int, origin: str) -> np.ndarray:
    """Weight N / (K * n_c) for class c of K with n_c of the N `labels` (scikit-learn's
    'balanced'): every class weighs the same in the loss, and the weights average 1 over
    the training images, so the loss keeps its scale. ValueError if a class has no images."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes)
    if not counts.all():
        raise ValueError(f"{origin}: class_weighting 'balanced' needs training images of every class; "
                         f"none of class(es) {np.flatnonzero(counts == 0).tolist()}")
    return (counts.sum() / (num_classes * counts)).astype(np.float32)


def evaluator_task(config: ml_collections.ConfigDict, train_faces) -> ClassifierTask:
    """The independent age evaluator (its own network, input scaling and seed), its loss
    weighted per age group of `train_faces` if config.class_weighting asks."""
    evaluator = age_evaluator.build_age_evaluator(config.model.evaluator, gan.compute_dtype(config),
                                                  gan.conv_impl(config))
    size = evaluator.image_size
    mean = jnp.asarray(CAFFE_MEAN_BGR, jnp.float32)

    init_network = jax.jit(lambda rng: evaluator.init(rng, jnp.zeros((1, size, size, 3)), train=False))

    def init_variables(rng: jax.Array) -> dict:
        variables = init_network(rng)
        return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}

    def apply(variables, frozen, images, rng):
        del frozen
        # The pipeline delivers AlexNet scaling (resized, minus the mean); the evaluator
        # takes the same resized pixels in [-1, 1] (age_evaluator.INPUT_SCALING).
        scaled = (images + mean) / 127.5 - 1.0
        if rng is None:
            return evaluator.apply(variables, scaled, train=False), variables["batch_stats"], None
        logits, updates = evaluator.apply(variables, scaled, train=True, mutable=["batch_stats"])
        return logits, updates["batch_stats"], None

    num_groups = config.model.evaluator.num_groups
    class_weights = (balanced_class_weights(train_faces.age_group, num_groups, train_faces.name)
                     if config.class_weighting == "balanced" else None)
    return ClassifierTask(label="age_group", image_size=size, class_names=AGE_GROUP_LABELS[:num_groups],
                          init_variables=init_variables, apply=apply, class_weights=class_weights)


def build_task(config: ml_collections.ConfigDict, train_faces, trunk: PyTree | None,
               classes: np.ndarray | None) -> ClassifierTask:
    """The task of `config.task`; `classes` (the training split's identities, in label
    order) for 'alexnet_identity', the frozen `trunk` for 'age_classifier'."""
    if config.task == "alexnet_identity":
        names = train_faces.identity_names
        class_names = tuple(names[c] if names is not None and 0 <= c < len(names) else str(c)
                            for c in classes.tolist())
        return identity_task(config, classes, class_names)
    if config.task == "age_classifier":
        return age_head_task(config, trunk)
    if config.task == "age_evaluator":
        return evaluator_task(config, train_faces)
    raise ConfigError(f"config key 'task': {config.task!r} is not a classifier task")
