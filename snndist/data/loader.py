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
from snndist.model.network import LayerSpec

# "auto" encodes as events below a density that falls with the first layer's size: an event costs a few
# fixed operations plus a row of weights, while the dense product's cost per input barely shrinks with a
# narrow layer (at 4 neurons it is mostly the per-input work). Fitted to the crossovers that
# scripts/bench_input_paths.py measured with f32 products on a 2-core AMD EPYC (BENCHMARKS.md): 4 neurons
# ~20%, 32 ~4.7%, 64 ~3.5%, 256 ~2.2%.
EVENTS_BELOW_WIDE = 0.02  # the crossover of a wide layer
EVENTS_BELOW_PER_NEURON = 0.72  # / the first layer's size, added to it
# Int8 products of a bool raster (train.spike_products) make the dense path cheaper: with AMX tiles the SHD
# network's crossover was 0.3-0.7% against 2.2% in f32.
INT8_DENSE_GAIN = 4


def events_pay(density: float, layer_size: int, int8_products: bool) -> bool:
    """Whether event lists beat the dense raster as the input of a first layer of ``layer_size`` neurons."""
    below = EVENTS_BELOW_WIDE + EVENTS_BELOW_PER_NEURON / layer_size
    return density < (below / INT8_DENSE_GAIN if int8_products else below)


def choose_encoding(cfg: DataConfig, dataset, first: LayerSpec) -> tuple[str, int]:
    """``(encoding, event capacity)`` of ``dataset`` as the input of the network's ``first`` layer; events
    need a capacity, from the config or the dataset."""
    capacity = cfg.max_events or dataset.max_events or 0
    if cfg.encoding == "events" and not capacity:
        raise DataError(f"{dataset.name}: data.encoding=events needs data.max_events here (a bound on the "
                        "spikes per sample, which only reading every sample would tell); or use dense")
    if cfg.encoding != "auto":
        return cfg.encoding, capacity
    # A bool raster's products run in int8 inside the time loop only (train.products: in_loop).
    int8 = first.lif.int8_spikes and not first.lif.batched_products and dataset.dtype == np.bool_
    pay = capacity and events_pay(dataset.density, first.size, int8)
    return ("events" if pay else "dense"), capacity


class SampleLoader:
    def __init__(self, dataset, cfg: DataConfig, first: LayerSpec, cache_bytes: int = 2**30,
                 say: Callable[[str], None] = print):
        """``first``: the network's first layer, whose shape picks the encoding (``choose_encoding``)."""
        self.dataset, self.say = dataset, say
        self.encoding, self.capacity = choose_encoding(cfg, dataset, first)
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
