"""Encoding dense spike rasters as padded event lists (``SpikeEvents``), the sparse input."""
from __future__ import annotations

import math

import numpy as np

from snndist.errors import DataError
from snndist.model.inputs import SpikeEvents


def to_events(spikes: np.ndarray, capacity: int) -> SpikeEvents:
    """Dense ``[batch, T, n]`` spikes (bool, or spike counts) -> ``SpikeEvents`` with ``capacity`` slots;
    a count of k is k events at the same step and unit.

    Raises DataError if a sample has more events than ``capacity``: they
    would be lost, silently changing the input.
    """
    batch, timesteps, _ = spikes.shape
    b, t, n = np.nonzero(spikes)
    if spikes.dtype != bool:
        repeats = spikes[b, t, n].astype(np.int64)
        b, t, n = np.repeat(b, repeats), np.repeat(t, repeats), np.repeat(n, repeats)
    counts = np.bincount(b, minlength=batch)
    if counts.size and counts.max() > capacity:
        worst = int(counts.argmax())
        raise DataError(f"sample at batch position {worst} has {counts[worst]} spikes, more than the "
                        f"event capacity {capacity}; raise data.max_events or use data.encoding=dense")
    slot = np.arange(b.size) - np.repeat(np.cumsum(counts) - counts, counts)
    times = np.full((batch, capacity), timesteps, np.int32)
    units = np.zeros((batch, capacity), np.int32)
    times[b, slot] = t
    units[b, slot] = n
    return SpikeEvents(times, units)


def capacity_of(spikes: np.ndarray) -> int:
    """Slots that hold every sample of dense ``[batch, T, n]`` spikes: the largest sample's events, rounded
    up to a multiple of 8 (at least 8)."""
    counts = spikes.reshape(len(spikes), -1).sum(axis=1, dtype=np.int64)
    return 8 * max(1, math.ceil(int(counts.max(initial=0)) / 8))


def bernoulli_capacity(timesteps: int, num_inputs: int, p: float) -> int:
    """Slots that a Bernoulli(p) raster exceeds with negligible probability.

    Mean plus 10 standard deviations plus 16, rounded up to a multiple of 8;
    ``to_events`` still checks every sample, so this bound is never trusted blindly.
    """
    n = timesteps * num_inputs
    bound = n * p + 10.0 * math.sqrt(n * p * (1.0 - p)) + 16
    return int(min(n, 8 * math.ceil(bound / 8)))
