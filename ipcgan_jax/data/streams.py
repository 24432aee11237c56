"""The seeded random streams the plans are made of (see `ipcgan_jax.data.plan`).

Each is a pure function of the seed and its key, computed in O(requested size) by epoch
arithmetic: the (target, false) age-group schedule, reshuffled image streams, flips, and
the rows of a process's shard.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from ipcgan_jax.constants import NUM_AGE_GROUPS

ORDERED_PAIRS = np.array(
    [(t, f) for t in range(NUM_AGE_GROUPS) for f in range(NUM_AGE_GROUPS) if t != f],
    dtype=np.int32,
)
PAIR_REPEATS_PER_ROUND = 20_000

# Keys that separate the random streams derived from one seed.
SCHEDULE_STREAM = 0
GROUP_STREAM = 1
SOURCE_STREAM = 2
FLIP_STREAM = 3
CLASSIFIER_STREAM = 4


def _check_seed(seed: int) -> None:
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


class PairSchedule:
    """The seeded (target, false) age-group schedule, indexed by slot (see `plan`)."""

    def __init__(self, seed: int, pair_repeats_per_round: int = PAIR_REPEATS_PER_ROUND):
        _check_seed(seed)
        if pair_repeats_per_round < 1:
            raise ValueError(f"pair_repeats_per_round must be >= 1, got {pair_repeats_per_round}")
        self.seed = int(seed)
        self.pair_repeats_per_round = int(pair_repeats_per_round)
        self.round_length = len(ORDERED_PAIRS) * self.pair_repeats_per_round
        # Each target group is the target of 4 ordered pairs.
        self.target_uses_per_round = (NUM_AGE_GROUPS - 1) * self.pair_repeats_per_round
        # Per instance; the backends call the plan from several threads (lru_cache is safe).
        self._rounds = functools.lru_cache(maxsize=2)(self._make_round)

    def _make_round(self, round_index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, SCHEDULE_STREAM, round_index])
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
        self._orders = functools.lru_cache(maxsize=4)(self._make_order)

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


def shard_rows(batch_size: int, process_index: int, process_count: int) -> np.ndarray:
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


def flip_decisions(seed: int, step: int, num_batches: int, batch_size: int,
                    rows: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng([seed, FLIP_STREAM, step])
    return (rng.random((num_batches, batch_size)) < 0.5)[:, rows]
