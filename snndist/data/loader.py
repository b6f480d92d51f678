"""Load a list of samples, encode them for the network, keep what was loaded.

Workers call ``SampleLoader.load`` with the indices of their shard only; a
sample is made (or read) once and then served from a host cache while the
encoded dataset fits in ``cache_bytes``.
"""
from __future__ import annotations

import numpy as np

from snndist.config import DataConfig
from snndist.data.events import to_events
from snndist.model.inputs import SpikeEvents

DENSE_BELOW = 0.02  # "auto" encodes as events below this input density


def choose_encoding(cfg: DataConfig, density: float) -> str:
    if cfg.encoding != "auto":
        return cfg.encoding
    return "events" if density < DENSE_BELOW else "dense"


class SampleLoader:
    def __init__(self, dataset, cfg: DataConfig, cache_bytes: int = 2**30):
        self.dataset = dataset
        self.encoding = choose_encoding(cfg, dataset.density)
        self.capacity = cfg.max_events or dataset.max_events
        n, t, c = len(dataset), dataset.timesteps, dataset.num_inputs
        per_sample = 8 * self.capacity if self.encoding == "events" else t * c
        self._cache = None
        if n * per_sample <= cache_bytes:
            if self.encoding == "events":
                x = SpikeEvents(np.zeros((n, self.capacity), np.int32), np.zeros((n, self.capacity), np.int32))
            else:
                x = np.zeros((n, t, c), bool)
            self._cache = (x, np.zeros(n, np.int32), np.zeros(n, bool))

    def load(self, indices: np.ndarray):
        """``(x, y)`` for ``indices``: ``SpikeEvents`` or a dense bool raster, and labels."""
        indices = np.asarray(indices)
        size = len(self.dataset)
        if indices.size and (indices.min() < 0 or indices.max() >= size):
            bad = indices[(indices < 0) | (indices >= size)][0]
            raise IndexError(f"sample index {bad} out of range [0, {size})")
        if self._cache is None:
            return self._encode(*self.dataset.load(indices))
        x, y, loaded = self._cache
        missing = np.unique(indices[~loaded[indices]])
        if missing.size:
            new_x, new_y = self._encode(*self.dataset.load(missing))
            _assign(x, missing, new_x)
            y[missing] = new_y
            loaded[missing] = True
        return _take(x, indices), y[indices]

    def _encode(self, spikes: np.ndarray, labels: np.ndarray):
        if self.encoding == "events":
            return to_events(spikes, self.capacity), labels
        return spikes, labels


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
