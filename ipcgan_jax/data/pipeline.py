"""tf.data input pipelines: GAN training batches (SPEC §6), classifier batches, eval batches.

Every batch is a pure function of (seed, step): a numpy *plan* picks the image indices of
a step in O(batch) time by epoch arithmetic, then tf.data fetches the images by index
(`tf.numpy_function`), applies the SPEC §7 scalings with TF1's legacy bilinear resize
(`tf.compat.v1.image.resize_bilinear`, align_corners=False, no antialias) and prefetches.
So resuming is exact: the pipeline position stored in a checkpoint is just the next step,
and `GanPipeline.batch_at(step)` reproduces any step on its own.

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

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from ipcgan_jax.data.sources import NUM_AGE_GROUPS, FaceSource, decode_images

MEAN_RGB = (104.0, 117.0, 124.0)
ORDERED_PAIRS = np.array(
    [(t, f) for t in range(NUM_AGE_GROUPS) for f in range(NUM_AGE_GROUPS) if t != f],
    dtype=np.int32,
)
PAIR_REPEATS_PER_ROUND = 20_000

# Keys that separate the random streams derived from one seed.
_SCHEDULE_STREAM = 0
_GROUP_STREAM = 1
_SOURCE_STREAM = 2
_FLIP_STREAM = 3
_CLASSIFIER_STREAM = 4


class _BoundedCache:
    """Thread-safe memo of the last few values of an expensive pure function (tf.data
    calls the plan from several threads)."""

    def __init__(self, compute: Callable[[int], Any], max_items: int = 4):
        self._compute = compute
        self._max_items = max_items
        self._items: OrderedDict[int, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, key: int) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = self._compute(key)
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._max_items:
                self._items.popitem(last=False)
        return value


def _check_seed(seed: int) -> None:
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


class PairSchedule:
    """The seeded (target, false) age-group schedule, indexed by slot (see module doc)."""

    def __init__(self, seed: int, pair_repeats_per_round: int = PAIR_REPEATS_PER_ROUND):
        _check_seed(seed)
        if pair_repeats_per_round < 1:
            raise ValueError(f"pair_repeats_per_round must be >= 1, got {pair_repeats_per_round}")
        self.seed = int(seed)
        self.pair_repeats_per_round = int(pair_repeats_per_round)
        self.round_length = len(ORDERED_PAIRS) * self.pair_repeats_per_round
        # Each target group is the target of 4 ordered pairs.
        self.target_uses_per_round = (NUM_AGE_GROUPS - 1) * self.pair_repeats_per_round
        self._rounds = _BoundedCache(self._make_round, max_items=2)

    def _make_round(self, round_index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, _SCHEDULE_STREAM, round_index])
        pair_ids = rng.permutation(
            np.repeat(np.arange(len(ORDERED_PAIRS), dtype=np.int32), self.pair_repeats_per_round))
        targets = ORDERED_PAIRS[pair_ids, 0]
        earlier_same_target = np.empty(self.round_length, np.int64)
        for group in range(NUM_AGE_GROUPS):
            slots = np.flatnonzero(targets == group)
            earlier_same_target[slots] = np.arange(slots.size)
        return pair_ids, earlier_same_target

    def pairs(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(target_group, false_group, earlier uses of that target) for each slot (>= 0)."""
        slots = np.asarray(slots, np.int64)
        target = np.empty(slots.shape, np.int32)
        false = np.empty(slots.shape, np.int32)
        uses = np.empty(slots.shape, np.int64)
        rounds, positions = np.divmod(slots, self.round_length)
        for round_index in np.unique(rounds):
            pair_ids, earlier_same_target = self._rounds(int(round_index))
            here = rounds == round_index
            pair = ORDERED_PAIRS[pair_ids[positions[here]]]
            target[here], false[here] = pair[:, 0], pair[:, 1]
            uses[here] = (round_index * self.target_uses_per_round
                          + earlier_same_target[positions[here]])
        return target, false, uses


class ReshuffledStream:
    """An endless sequence over `pool` (image indices): epoch after epoch, each in an
    order that is a function of (seed, key, epoch) only."""

    def __init__(self, pool: np.ndarray, seed: int, key: Sequence[int]):
        _check_seed(seed)
        self.pool = np.asarray(pool, np.int64)
        if self.pool.size == 0:
            raise ValueError("a stream needs at least one image")
        self._seed_key = [int(seed), *[int(k) for k in key]]
        self._orders = _BoundedCache(self._make_order, max_items=4)

    def _make_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([*self._seed_key, epoch]).permutation(self.pool)

    def at(self, positions: np.ndarray) -> np.ndarray:
        """Image indices at stream positions (>= 0)."""
        positions = np.asarray(positions, np.int64)
        epochs, offsets = np.divmod(positions, self.pool.size)
        indices = np.empty(positions.shape, np.int64)
        for epoch in np.unique(epochs):
            here = epochs == epoch
            indices[here] = self._orders(int(epoch))[offsets[here]]
        return indices


def _shard_rows(batch_size: int, process_index: int, process_count: int) -> np.ndarray:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(
            f"process_index {process_index} must be in 0..process_count-1 "
            f"(process_count {process_count})")
    if batch_size < 1 or batch_size % process_count:
        raise ValueError(
            f"batch_size {batch_size} must be a positive multiple of process_count "
            f"{process_count}")
    rows_per_process = batch_size // process_count
    return np.arange(process_index * rows_per_process, (process_index + 1) * rows_per_process)


def _flip_decisions(seed: int, step: int, num_batches: int, batch_size: int,
                    rows: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng([seed, _FLIP_STREAM, step])
    return (rng.random((num_batches, batch_size)) < 0.5)[:, rows]


def _images_at(source: FaceSource, indices: tf.Tensor, flips: tf.Tensor | None) -> tf.Tensor:
    """uint8 (k, H, W, 3) images of `source` at `indices`, mirrored where `flips`.

    Stored datasets hand over the encoded files and TF decodes them, outside the GIL.
    """
    if source.fetch_encoded is not None:
        encoded = tf.numpy_function(source.fetch_encoded, [indices], tf.string, stateful=False)
        encoded.set_shape(indices.shape)
        images = decode_images(encoded)
    else:
        images = tf.numpy_function(source.images, [indices], tf.uint8, stateful=False)
    images.set_shape([indices.shape[0], None, None, 3])
    if flips is None:
        return images
    return tf.where(flips[:, None, None, None], tf.reverse(images, axis=[2]), images)


def _resize(images: tf.Tensor, size: int) -> tf.Tensor:
    # TF1 legacy bilinear (align_corners=False, no half-pixel centres, no antialias).
    return tf.compat.v1.image.resize_bilinear(images, (size, size), align_corners=False)


def _to_mean_subtracted(images: tf.Tensor, size: int) -> tf.Tensor:
    """RGB 0..255 -> G / AlexNet input scaling: resized, minus the Caffe mean (RGB order)."""
    return _resize(images, size) - tf.constant(MEAN_RGB, tf.float32)


def _to_unit_range(images: tf.Tensor, size: int) -> tf.Tensor:
    """RGB 0..255 -> D input scaling: resized, in [-1, 1]."""
    return _resize(images, size) / 127.5 - 1.0


def _check_steps(start_step: int, num_steps: int) -> None:
    if not 0 <= start_step <= num_steps:
        raise ValueError(f"need 0 <= start_step <= num_steps, got {start_step}, {num_steps}")


def _iterate(tensors_at_step: Callable[[tf.Tensor], dict], start_step: int, num_steps: int,
             prefetch: int) -> Iterator[dict]:
    dataset = tf.data.Dataset.range(start_step, num_steps).map(
        tensors_at_step, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # Without the autotuner, AUTOTUNE maps run at the default parallelism (one call per
    # core). With it, dropping an iterator after a run of minutes stalled 30-50 s (the
    # iterator's destructor waits on the autotuner's thread), between every two runs
    # of the demo; the training speed was the same either way.
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(prefetch).with_options(options).as_numpy_iterator()


class _StepPipeline:
    """Batches that are pure functions of the step: subclasses define `_tensors_at`."""

    def _tensors_at(self, step: tf.Tensor) -> dict[str, tf.Tensor]:
        raise NotImplementedError

    def batch_at(self, step: int) -> dict[str, np.ndarray]:
        """The batch the iterator yields at `step`, computed on its own."""
        return {name: value.numpy()
                for name, value in self._tensors_at(tf.constant(step, tf.int64)).items()}

    def batches(self, num_steps: int, start_step: int = 0, prefetch: int = 2) -> Iterator[dict]:
        """Batches of steps start_step .. num_steps - 1, as numpy dicts."""
        _check_steps(start_step, num_steps)
        return _iterate(self._tensors_at, start_step, num_steps, prefetch)


class GanPipeline(_StepPipeline):
    """GAN training batches of SPEC §6 for this process's shard (see module doc).

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
        self.rows = _shard_rows(batch_size, process_index, process_count)
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
                source.indices_of_group(group), seed, (_GROUP_STREAM, group)))
        self.source_stream = ReshuffledStream(
            np.concatenate([source.indices_of_group(g) for g in self.source_groups]),
            seed, (_SOURCE_STREAM,))

    def plan_at(self, step: int) -> dict[str, np.ndarray]:
        """Image indices, groups and flips of this shard's rows at `step` (no images)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
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
        flips = (_flip_decisions(self.seed, step, 3, batch_size, rows) if self.flip
                 else np.zeros((3, rows.size), bool))
        plan["source_d_flip"], plan["source_g_flip"], plan["real_flip"] = flips
        return plan

    def _plan_arrays(self, step: np.ndarray) -> tuple[np.ndarray, ...]:
        plan = self.plan_at(int(step))
        kinds = ("source_d", "source_g", "real")
        return (np.concatenate([plan[f"{kind}_index"] for kind in kinds]),
                np.concatenate([plan[f"{kind}_flip"] for kind in kinds]),
                plan["target_group"], plan["false_group"])

    def _tensors_at(self, step: tf.Tensor) -> dict[str, tf.Tensor]:
        k = self.rows.size
        indices, flips, target, false = tf.numpy_function(
            self._plan_arrays, [step], [tf.int64, tf.bool, tf.int32, tf.int32], stateful=False)
        for vector, length in ((indices, 3 * k), (flips, 3 * k), (target, k), (false, k)):
            vector.set_shape([length])
        images = _images_at(self.source, indices, flips if self.flip else None)
        sources = images[: 2 * k]
        source_inputs = _to_mean_subtracted(sources, self.image_size)
        return {
            "source_d": source_inputs[:k],
            "source_g": source_inputs[k:],
            "source_g_alexnet": _to_mean_subtracted(sources[k:], self.alexnet_size),
            "real": _to_unit_range(images[2 * k:], self.image_size),
            "target_group": target,
            "false_group": false,
            "step": tf.cast(step, tf.int64),
        }


def gan_batches(
    source: FaceSource,
    *,
    batch_size: int,
    seed: int,
    num_steps: int,
    image_size: int = 128,
    alexnet_size: int = 227,
    start_step: int = 0,
    source_groups: Sequence[int] = (0,),
    mixed_age: bool = False,
    flip: bool = False,
    process_index: int = 0,
    process_count: int = 1,
    prefetch: int = 2,
    pair_repeats_per_round: int = PAIR_REPEATS_PER_ROUND,
) -> Iterator[dict[str, np.ndarray]]:
    """GAN training batches of steps start_step .. num_steps - 1 (see `GanPipeline`)."""
    pipeline = GanPipeline(
        source, batch_size=batch_size, seed=seed, image_size=image_size,
        alexnet_size=alexnet_size, source_groups=source_groups, mixed_age=mixed_age,
        flip=flip, process_index=process_index, process_count=process_count,
        pair_repeats_per_round=pair_repeats_per_round)
    return pipeline.batches(num_steps, start_step, prefetch)


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


class ClassifierPipeline(_StepPipeline):
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
        self.rows = _shard_rows(batch_size, process_index, process_count)
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
        self.stream = ReshuffledStream(np.arange(len(source)), seed, (_CLASSIFIER_STREAM,))

    def plan_at(self, step: int) -> dict[str, np.ndarray]:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        index = self.stream.at(step * self.batch_size + self.rows)
        flips = (_flip_decisions(self.seed, step, 1, self.batch_size, self.rows)[0]
                 if self.flip else np.zeros(self.rows.size, bool))
        return {"index": index, "label": self.labels[index], "flip": flips,
                "age_group": self.source.age_group[index].astype(np.int32)}

    def _plan_arrays(self, step: np.ndarray) -> tuple[np.ndarray, ...]:
        plan = self.plan_at(int(step))
        return plan["index"], plan["flip"], plan["label"], plan["age_group"]

    def _tensors_at(self, step: tf.Tensor) -> dict[str, tf.Tensor]:
        indices, flips, labels, age_groups = tf.numpy_function(
            self._plan_arrays, [step], [tf.int64, tf.bool, tf.int32, tf.int32], stateful=False)
        for vector in (indices, flips, labels, age_groups):
            vector.set_shape([self.rows.size])
        images = _images_at(self.source, indices, flips if self.flip else None)
        return {"image": _to_mean_subtracted(images, self.image_size), "label": labels,
                "age_group": age_groups, "step": tf.cast(step, tf.int64)}


def classifier_batches(
    source: FaceSource,
    *,
    label: str,
    batch_size: int,
    seed: int,
    num_steps: int,
    image_size: int = 227,
    start_step: int = 0,
    flip: bool = False,
    process_index: int = 0,
    process_count: int = 1,
    classes: np.ndarray | None = None,
    prefetch: int = 2,
) -> Iterator[dict[str, np.ndarray]]:
    """Classifier batches of steps start_step .. num_steps - 1 (see `ClassifierPipeline`)."""
    pipeline = ClassifierPipeline(
        source, label=label, batch_size=batch_size, seed=seed, image_size=image_size,
        flip=flip, process_index=process_index, process_count=process_count, classes=classes)
    return pipeline.batches(num_steps, start_step, prefetch)


def eval_batches(
    source: FaceSource,
    *,
    batch_size: int,
    image_size: int = 128,
    alexnet_size: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    prefetch: int = 2,
) -> Iterator[dict[str, np.ndarray]]:
    """The whole split once, in index order, in global batches of `batch_size`.

    The last batch is padded by repeating the last image; `mask` (k,) marks real rows
    and `valid` counts them in this shard. Batch: source (k,S,S,3) G-input scaling,
    real (k,S,S,3) in [-1, 1], pixels (k,S,S,3) uint8 (the resized image, rounded),
    source_alexnet (k,A,A,3) when alexnet_size is given, index, age_group, identity,
    age (k,), mask (k,) bool, valid () int64.
    """
    rows = _shard_rows(batch_size, process_index, process_count)
    if len(source) == 0:
        raise ValueError(f"{source.name}: no images to evaluate")
    num_batches = -(-len(source) // batch_size)

    def plan_arrays(batch: np.ndarray) -> tuple[np.ndarray, ...]:
        positions = int(batch) * batch_size + rows
        mask = positions < len(source)
        index = np.minimum(positions, len(source) - 1)
        return (index, source.age_group[index], source.identity[index], source.age[index], mask)

    def tensors_at(batch: tf.Tensor) -> dict[str, tf.Tensor]:
        index, age_group, identity, age, mask = tf.numpy_function(
            plan_arrays, [batch], [tf.int64, tf.int64, tf.int64, tf.int64, tf.bool],
            stateful=False)
        for vector in (index, age_group, identity, age, mask):
            vector.set_shape([rows.size])
        images = _images_at(source, index, None)
        resized = _resize(images, image_size)
        tensors = {
            "source": resized - tf.constant(MEAN_RGB, tf.float32),
            "real": resized / 127.5 - 1.0,
            "pixels": tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8),
            "index": index, "age_group": age_group, "identity": identity, "age": age,
            "mask": mask, "valid": tf.reduce_sum(tf.cast(mask, tf.int64)),
        }
        if alexnet_size is not None:
            tensors["source_alexnet"] = _to_mean_subtracted(images, alexnet_size)
        return tensors

    return _iterate(tensors_at, 0, num_batches, prefetch)
