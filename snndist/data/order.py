"""Which samples each step reads, and how a global batch splits into shards.

The sample stream is the concatenation of one permutation of the dataset per
epoch, so step ``s`` reads stream positions ``[s * B, (s + 1) * B)``: the data
position (epoch, offset) follows from the step alone, and a resumed run reads
exactly what an uninterrupted one would.
"""
from __future__ import annotations

import numpy as np


def epoch_order(epoch: int, num_samples: int, seed: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(num_samples)
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


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


def shard_sizes(total: int, parts: int) -> list[int]:
    """Split ``total`` into ``parts`` contiguous sizes differing by at most one."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]
