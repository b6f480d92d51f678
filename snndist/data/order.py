"""Which samples each step reads, and how a global batch splits into shards.

The sample stream is the concatenation of one permutation of the dataset per
epoch, so step ``s`` reads stream positions ``[s * B, (s + 1) * B)``: the data
position (epoch, offset) follows from the step alone, and a resumed run reads
exactly what an uninterrupted one would.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np


@functools.lru_cache(maxsize=4)  # each step and the one after it read the same epoch or two
def epoch_order(epoch: int, num_samples: int, seed: int, shuffle: bool) -> np.ndarray:
    order = np.random.default_rng([seed, epoch]).permutation(num_samples) if shuffle else np.arange(num_samples)
    order.flags.writeable = False  # shared by the cache
    return order


def batch_indices(step: int, global_batch: int, num_samples: int, seed: int,
                  shuffle: bool = True) -> np.ndarray:
    """Dataset indices of the global batch of ``step`` (0-based)."""
    start, stop = step * global_batch, (step + 1) * global_batch
    first, last = start // num_samples, (stop - 1) // num_samples
    stream = np.concatenate([epoch_order(e, num_samples, seed, shuffle) for e in range(first, last + 1)])
    offset = start - first * num_samples
    return stream[offset:offset + global_batch]


def data_position(step: int, global_batch: int, num_samples: int) -> dict[str, int]:
    """Epoch and offset within it of the first sample of ``step``."""
    epoch, offset = divmod(step * global_batch, num_samples)
    return {"epoch": epoch, "offset": offset}


class Shard(NamedTuple):
    """One worker's part of a global batch: dataset indices and per-sample weights."""

    indices: np.ndarray  # [rows] int
    weights: np.ndarray  # [rows] float32: 1 for a sample, 0 for padding


def plan_shards(indices: np.ndarray, num_workers: int, devices_per_worker: int,
                min_rows: int = 0) -> list[Shard]:
    """Split a global batch into equal, contiguous per-worker shards.

    Every device gets the same number of rows (a sharded array needs it), so
    the batch is padded at its end, to at least ``min_rows`` rows if asked,
    with weight-0 copies of its first sample; the loss averages over real
    samples only, so padding changes nothing.
    """
    devices = num_workers * devices_per_worker
    per_device = -(-max(len(indices), min_rows) // devices)
    pad = per_device * devices - len(indices)
    rows = np.concatenate([indices, np.full(pad, indices[0], dtype=indices.dtype)])
    weights = np.concatenate([np.ones(len(indices), np.float32), np.zeros(pad, np.float32)])
    size = per_device * devices_per_worker
    return [Shard(rows[r * size:(r + 1) * size], weights[r * size:(r + 1) * size]) for r in range(num_workers)]
