"""Load a list of samples, encode them for the network, keep what was loaded.

Workers call ``SampleLoader.load`` with the indices of their shard only; a
sample is made (or read and binned) once and then served from a host cache
while the encoded dataset fits in ``cache_bytes``. ``prefetch`` loads the
next step's samples into that cache while the current step runs.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from snndist.config import DataConfig
from snndist.data.events import to_events
from snndist.errors import DataError
from snndist.model.inputs import SpikeEvents

DENSE_BELOW = 0.02  # "auto" encodes as events below this input density


def choose_encoding(cfg: DataConfig, dataset) -> tuple[str, int]:
    """``(encoding, event capacity)``; events need a capacity, from the config or the dataset."""
    capacity = cfg.max_events or dataset.max_events or 0
    if cfg.encoding == "events" and not capacity:
        raise DataError(f"{dataset.name}: data.encoding=events needs data.max_events here (a bound on the "
                        "spikes per sample, which only reading every sample would tell); or use dense")
    if cfg.encoding != "auto":
        return cfg.encoding, capacity
    return ("events" if capacity and dataset.density < DENSE_BELOW else "dense"), capacity


class SampleLoader:
    def __init__(self, dataset, cfg: DataConfig, cache_bytes: int = 2**30, say: Callable[[str], None] = print):
        self.dataset, self.say = dataset, say
        self.encoding, self.capacity = choose_encoding(cfg, dataset)
        self.window_ms = cfg.timesteps * cfg.dt_ms
        self._warned = False
        n, t, c = len(dataset), dataset.timesteps, dataset.num_inputs
        per_sample = 8 * self.capacity if self.encoding == "events" else t * c
        self._cache, self._missing = None, n
        if n * per_sample <= cache_bytes:
            if self.encoding == "events":
                x = SpikeEvents(np.zeros((n, self.capacity), np.int32), np.zeros((n, self.capacity), np.int32))
            else:
                x = np.zeros((n, t, c), dataset.dtype)
            self._cache = (x, np.zeros(n, np.int32), np.zeros(n, np.int64), np.zeros(n, bool))

    def load(self, indices: np.ndarray):
        """``(x, y, dropped)`` for ``indices``: ``SpikeEvents`` or a dense raster, labels, and each
        sample's recorded events that fell past the time window."""
        indices = self._checked(indices)
        if self._cache is None:
            return self._encode(*self.dataset.load(indices))
        self.prefetch(indices)
        x, y, dropped, _ = self._cache
        return _take(x, indices), y[indices], dropped[indices]

    def prefetch(self, indices: np.ndarray) -> None:
        """Load and keep the samples of ``indices`` not loaded yet (nothing, if the cache is off)."""
        if self._cache is None:
            return
        x, y, dropped, loaded = self._cache
        indices = self._checked(indices)
        missing = np.unique(indices[~loaded[indices]])
        if missing.size:
            new_x, new_y, new_dropped = self._encode(*self.dataset.load(missing))
            _assign(x, missing, new_x)
            y[missing], dropped[missing], loaded[missing] = new_y, new_dropped, True
            self._missing -= missing.size

    def whole(self):
        """``(x, y, dropped)`` of every sample once each has been loaded into the cache, else None."""
        return None if self._cache is None or self._missing else self._cache[:3]

    def _checked(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices)
        size = len(self.dataset)
        if indices.size and (indices.min() < 0 or indices.max() >= size):
            bad = indices[(indices < 0) | (indices >= size)][0]
            raise IndexError(f"sample index {bad} out of range [0, {size})")
        return indices

    def _encode(self, spikes: np.ndarray, labels: np.ndarray, dropped: np.ndarray):
        if dropped.any() and not self._warned:
            self._warned = True
            self.say(f"warning: {self.dataset.name}: events at or after {self.window_ms:g} ms (data.timesteps x "
                     f"data.dt_ms) are dropped, {int(dropped.sum())} of them in the first {len(dropped)} samples "
                     "read; data/dropped_events counts them per step")
        if self.encoding == "events":
            return to_events(spikes, self.capacity), labels, dropped
        return spikes, labels, dropped


def _assign(x, indices, values) -> None:
    if isinstance(x, SpikeEvents):
        for dst, src in zip(x, values):
            dst[indices] = src
    else:
        x[indices] = values


def _take(x, indices):
    if isinstance(x, SpikeEvents):
        return SpikeEvents(*(a[indices] for a in x))
    return x[indices]
