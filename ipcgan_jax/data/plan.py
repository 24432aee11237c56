"""The plans of the input pipelines: which images, groups and flips every step uses.

A plan is numpy only (no TensorFlow): both input backends, tf.data (`pipeline`) and
numpy threads (`numpy_pipeline`), fetch the images a plan names and apply the same
scalings (`image_fields`, docs/faithfulness.md §8), so they give identical batches for a
(seed, step). Every batch is a pure function of (seed, step): a plan picks the image
indices of a step in O(batch) time by epoch arithmetic. So resuming is exact: the pipeline position stored in a
checkpoint is just the next step, and `batch_at(step)` reproduces any step on its own.

GAN schedule (faithful). Step s uses slot s of a schedule of ordered (target, false)
age-group pairs, t != f. The schedule is made of rounds of 20 * R slots (R =
`pair_repeats_per_round`, 20,000 by default): round r is a seeded shuffle of each of the 20
pairs repeated R times, a function of (seed, r) only. With R = 20,000 the paper's
400,000-step schedule is exactly round 0 (each pair 20,000 times); training longer continues
with round 1, and the value at a step never depends on `num_steps`.
The whole global batch has one target group t. Each age group g has its own stream: the
images of g in an order reshuffled at every wrap (the permutation of epoch e of group g is
a function of (seed, g, e)); the real batch of a step is the next `batch_size` images of
the stream of t, i.e. stream positions [u * B, (u + 1) * B) where u counts the earlier
steps with target t. Sources come from one more stream over the images of
`source_groups`, two batches per step: positions [2sB, (2s+1)B) for the D update and
[(2s+1)B, (2s+2)B) for the G update.

Mixed-age variant. Example i of step s uses slot s * B + i of the same schedule, so every
example has its own (t, f) with t != f and each round of 20 * R examples holds every pair
R times; its real image is the next single image of the stream of its own t (position u,
with u counting the earlier examples with target t).

Flip variant (off in the faithful config): each row of each of the three batches is
mirrored with probability 1/2, drawn from (seed, step); source_g and source_g_alexnet share
their flips. Flips apply to the stored image, before resizing.

Sharding: a process with index p of P gets rows [p * k, (p + 1) * k) of every global
batch (k = B / P); the plan computes only those rows, and the concatenation of all shards
is the single-process batch.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from ipcgan_jax.constants import CAFFE_MEAN_BGR, NUM_AGE_GROUPS
from ipcgan_jax.data.sources import FaceSource
from ipcgan_jax.data.streams import (
    CLASSIFIER_STREAM,
    GROUP_STREAM,
    PAIR_REPEATS_PER_ROUND,
    SOURCE_STREAM,
    PairSchedule,
    ReshuffledStream,
    flip_decisions,
    shard_rows,
)

# The G-input and AlexNet scaling subtracts the Caffe mean from the RGB channels
# (docs/faithfulness.md §8).
_MEAN = np.asarray(CAFFE_MEAN_BGR, np.float32)

# A backend's image operations: resize uint8 (k, H, W, 3) images to (k, size, size, 3)
# float32 with TF1's legacy bilinear; round resized float32 images to uint8 pixels.
Resize = Callable[[Any, int], Any]
ToPixels = Callable[[Any], Any]


def _check_step(step: int) -> None:
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")


def check_steps(start_step: int, num_steps: int) -> None:
    """Error unless 0 <= start_step <= num_steps (the range of steps a run iterates)."""
    if not 0 <= start_step <= num_steps:
        raise ValueError(f"need 0 <= start_step <= num_steps, got {start_step}, {num_steps}")


def _mean_subtracted(resized: Any) -> Any:
    """G / AlexNet input scaling of resized RGB 0..255 images: minus the Caffe mean."""
    return resized - _MEAN


def _unit_range(resized: Any) -> Any:
    """D input scaling of resized RGB 0..255 images: [-1, 1]."""
    return resized / 127.5 - 1.0


class BatchPlan(Protocol):
    """What a backend needs from a plan to make the batch of a step.

    `arrays_at(step)` gives the image indices to fetch, whether to mirror each (used only
    when `flip`), and the batch's label fields; the backend fetches the images from
    `source`, mirrors them, and adds `image_fields(images, resize, to_pixels)`.
    `label_specs()` gives each label field's dtype and shape, for backends that need them
    before running the plan.
    """

    source: FaceSource
    flip: bool

    def num_images(self) -> int: ...

    def label_specs(self) -> dict[str, tuple[type, tuple[int, ...]]]: ...

    def arrays_at(self, step: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]: ...

    def image_fields(self, images: Any, resize: Resize, to_pixels: ToPixels) -> dict[str, Any]: ...


class GanPlan:
    """GAN training batches (docs/faithfulness.md §10) for this process's shard (module doc).

    A batch (k = batch_size / process_count rows, S = image_size, A = alexnet_size):
      source_d (k,S,S,3) float32: G-input scaling, the sources of the D update;
      source_g (k,S,S,3): fresh sources for the G update, and source_g_alexnet
        (k,A,A,3) the same stored images resized to A (AlexNet scaling);
      real (k,S,S,3) float32 in [-1, 1]: real images of each row's target group;
      target_group, false_group (k,) int32; step () int64.
    """

    def __init__(
        self,
        source: FaceSource,
        *,
        batch_size: int,
        seed: int,
        image_size: int = 128,
        alexnet_size: int = 227,
        source_groups: Sequence[int] = (0,),
        mixed_age: bool = False,
        flip: bool = False,
        process_index: int = 0,
        process_count: int = 1,
        pair_repeats_per_round: int = PAIR_REPEATS_PER_ROUND,
    ):
        self.rows = shard_rows(batch_size, process_index, process_count)
        self.source = source
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.image_size = int(image_size)
        self.alexnet_size = int(alexnet_size)
        self.mixed_age = bool(mixed_age)
        self.flip = bool(flip)
        self.schedule = PairSchedule(seed, pair_repeats_per_round)
        source_groups = sorted({int(g) for g in source_groups})
        if not source_groups or not all(0 <= g < NUM_AGE_GROUPS for g in source_groups):
            raise ValueError(
                f"source_groups must be non-empty age groups in 0..{NUM_AGE_GROUPS - 1}, "
                f"got {source_groups}")
        self.source_groups = tuple(source_groups)
        # Every group is a target of the schedule, so every group needs real images.
        self.group_streams = []
        for group in range(NUM_AGE_GROUPS):
            if not np.any(source.age_group == group):
                raise ValueError(
                    f"{source.name}: no images in age group {group} "
                    f"(every age group is a target group of the GAN schedule)")
            self.group_streams.append(ReshuffledStream(
                source.indices_of_group(group), seed, (GROUP_STREAM, group)))
        self.source_stream = ReshuffledStream(
            np.concatenate([source.indices_of_group(g) for g in self.source_groups]),
            seed, (SOURCE_STREAM,))

    def plan_at(self, step: int) -> dict[str, np.ndarray]:
        """Image indices, groups and flips of this shard's rows at `step` (no images)."""
        _check_step(step)
        batch_size, rows = self.batch_size, self.rows
        if self.mixed_age:
            target, false, uses = self.schedule.pairs(step * batch_size + rows)
            real_index = np.empty(rows.size, np.int64)
            for group in np.unique(target):
                here = target == group
                real_index[here] = self.group_streams[group].at(uses[here])
        else:
            target, false, uses = self.schedule.pairs(np.array([step]))
            real_index = self.group_streams[target[0]].at(uses[0] * batch_size + rows)
            target = np.full(rows.size, target[0], np.int32)
            false = np.full(rows.size, false[0], np.int32)
        plan = {
            "source_d_index": self.source_stream.at(2 * step * batch_size + rows),
            "source_g_index": self.source_stream.at((2 * step + 1) * batch_size + rows),
            "real_index": real_index,
            "target_group": target,
            "false_group": false,
        }
        flips = (flip_decisions(self.seed, step, 3, batch_size, rows) if self.flip
                 else np.zeros((3, rows.size), bool))
        plan["source_d_flip"], plan["source_g_flip"], plan["real_flip"] = flips
        return plan

    def num_images(self) -> int:
        return 3 * self.rows.size

    def label_specs(self) -> dict[str, tuple[type, tuple[int, ...]]]:
        k = self.rows.size
        return {"target_group": (np.int32, (k,)), "false_group": (np.int32, (k,)),
                "step": (np.int64, ())}

    def arrays_at(self, step: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Indices and flips of the D sources, G sources and real images, then the labels."""
        plan = self.plan_at(step)
        kinds = ("source_d", "source_g", "real")
        return (np.concatenate([plan[f"{kind}_index"] for kind in kinds]),
                np.concatenate([plan[f"{kind}_flip"] for kind in kinds]),
                {"target_group": plan["target_group"], "false_group": plan["false_group"],
                 "step": np.int64(step)})

    def image_fields(self, images: Any, resize: Resize, to_pixels: ToPixels) -> dict[str, Any]:
        del to_pixels  # GAN batches hold no pixels
        k = self.rows.size
        sources = images[: 2 * k]
        source_inputs = _mean_subtracted(resize(sources, self.image_size))
        return {"source_d": source_inputs[:k], "source_g": source_inputs[k:],
                "source_g_alexnet": _mean_subtracted(resize(sources[k:], self.alexnet_size)),
                "real": _unit_range(resize(images[2 * k:], self.image_size))}


def identity_classes(source: FaceSource) -> np.ndarray:
    """The sorted original identity ids; class label i stands for identity_classes[i]."""
    return np.unique(source.identity)


def identity_labels(identity: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Contiguous labels 0..K-1 of original identity ids, by their place in `classes`."""
    identity = np.asarray(identity)
    labels = np.searchsorted(classes, identity)
    unknown = (labels >= classes.size) | (classes[np.minimum(labels, classes.size - 1)] != identity)
    if unknown.any():
        raise ValueError(f"identity {int(identity[unknown][0])} is not in the class list")
    return labels.astype(np.int32)


class ClassifierPlan:
    """Batches for training the identity or age classifier on AlexNet-scaled images.

    All images of the source in an order reshuffled every epoch (a function of
    (seed, epoch)); step s takes stream positions [s * B, (s + 1) * B) (this shard's rows).
    Batch: image (k,A,A,3) float32 AlexNet scaling, label (k,) int32, age_group (k,) int32
    (for auxiliary age terms), step () int64.
    Identity labels are contiguous (see `identity_classes`); pass the training split's
    `classes` when labelling another split.
    """

    def __init__(
        self,
        source: FaceSource,
        *,
        label: str,
        batch_size: int,
        seed: int,
        image_size: int = 227,
        flip: bool = False,
        process_index: int = 0,
        process_count: int = 1,
        classes: np.ndarray | None = None,
    ):
        self.rows = shard_rows(batch_size, process_index, process_count)
        if label == "identity":
            if (source.identity < 0).any():
                raise ValueError(
                    f"{source.name}: {int((source.identity < 0).sum())} images have no "
                    f"identity; identity labels need one for every image")
            self.classes = identity_classes(source) if classes is None else np.asarray(classes)
            self.labels = identity_labels(source.identity, self.classes)
        elif label == "age_group":
            self.classes = np.arange(NUM_AGE_GROUPS)
            self.labels = source.age_group.astype(np.int32)
        else:
            raise ValueError(f"label must be 'identity' or 'age_group', got {label!r}")
        if len(source) == 0:
            raise ValueError(f"{source.name}: no images to train a classifier on")
        self.source = source
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.image_size = int(image_size)
        self.flip = bool(flip)
        self.stream = ReshuffledStream(np.arange(len(source)), seed, (CLASSIFIER_STREAM,))

    def plan_at(self, step: int) -> dict[str, np.ndarray]:
        """Image indices, labels and flips of this shard's rows at `step` (no images)."""
        _check_step(step)
        index = self.stream.at(step * self.batch_size + self.rows)
        flips = (flip_decisions(self.seed, step, 1, self.batch_size, self.rows)[0]
                 if self.flip else np.zeros(self.rows.size, bool))
        return {"index": index, "label": self.labels[index], "flip": flips,
                "age_group": self.source.age_group[index].astype(np.int32)}

    def num_images(self) -> int:
        return self.rows.size

    def label_specs(self) -> dict[str, tuple[type, tuple[int, ...]]]:
        k = self.rows.size
        return {"label": (np.int32, (k,)), "age_group": (np.int32, (k,)), "step": (np.int64, ())}

    def arrays_at(self, step: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        plan = self.plan_at(step)
        return plan["index"], plan["flip"], {"label": plan["label"], "age_group": plan["age_group"],
                                             "step": np.int64(step)}

    def image_fields(self, images: Any, resize: Resize, to_pixels: ToPixels) -> dict[str, Any]:
        del to_pixels  # classifier batches hold no pixels
        return {"image": _mean_subtracted(resize(images, self.image_size))}


class EvalPlan:
    """The whole split once, in index order, in global batches of `batch_size`.

    Step b is batch b of `num_batches`. The last batch is padded by repeating the last
    image; `mask` (k,) marks real rows and `valid` counts them in this shard. Batch:
    source (k,S,S,3) G-input scaling, real (k,S,S,3) in [-1, 1], pixels (k,S,S,3) uint8
    (the resized image, rounded), source_alexnet (k,A,A,3) when alexnet_size is given,
    index, age_group, identity, age (k,) int64, mask (k,) bool, valid () int64.
    """

    flip = False

    def __init__(
        self,
        source: FaceSource,
        *,
        batch_size: int,
        image_size: int = 128,
        alexnet_size: int | None = None,
        process_index: int = 0,
        process_count: int = 1,
    ):
        self.rows = shard_rows(batch_size, process_index, process_count)
        if len(source) == 0:
            raise ValueError(f"{source.name}: no images to evaluate")
        self.source = source
        self.batch_size = int(batch_size)
        self.image_size = int(image_size)
        self.alexnet_size = None if alexnet_size is None else int(alexnet_size)
        self.num_batches = -(-len(source) // self.batch_size)

    def num_images(self) -> int:
        return self.rows.size

    def label_specs(self) -> dict[str, tuple[type, tuple[int, ...]]]:
        k = self.rows.size
        return {"index": (np.int64, (k,)), "age_group": (np.int64, (k,)),
                "identity": (np.int64, (k,)), "age": (np.int64, (k,)), "mask": (np.bool_, (k,)),
                "valid": (np.int64, ())}

    def arrays_at(self, step: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        if not 0 <= step < self.num_batches:
            raise ValueError(f"eval batch {step} is not in 0..{self.num_batches - 1}")
        positions = step * self.batch_size + self.rows
        mask = positions < len(self.source)
        index = np.minimum(positions, len(self.source) - 1)
        source = self.source
        return index, np.zeros(index.size, bool), {
            "index": index, "age_group": source.age_group[index], "identity": source.identity[index],
            "age": source.age[index], "mask": mask, "valid": np.int64(mask.sum())}

    def image_fields(self, images: Any, resize: Resize, to_pixels: ToPixels) -> dict[str, Any]:
        resized = resize(images, self.image_size)
        fields = {"source": _mean_subtracted(resized), "real": _unit_range(resized),
                  "pixels": to_pixels(resized)}
        if self.alexnet_size is not None:
            fields["source_alexnet"] = _mean_subtracted(resize(images, self.alexnet_size))
        return fields
