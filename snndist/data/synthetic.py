"""The seed's task: Bernoulli spike trains with random labels.

Sample ``i`` of a split is a pure function of ``(seed, split, i)``, so any
worker can make exactly the samples of its shard, in any order.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from snndist.config import DataConfig
from snndist.data.events import bernoulli_capacity, capacity_of
from snndist.data.splits import SPLIT_IDS

_CHUNK = 32  # samples made per call of the jitted generator
# Up to this many raster elements (samples x T x inputs) the split's own largest sample sets the event
# capacity; beyond, a bound on Bernoulli counts does. The event path's work grows with the capacity: the
# tutorial's largest sample has about 130 events where the bound allows 216.
COUNT_EVENTS_UP_TO = 2**26


class SyntheticSpikes:
    """``num_samples`` samples of ``timesteps x num_inputs`` spikes at ``rate_hz``."""

    def __init__(self, cfg: DataConfig, split: str = "train", default_seed: int = 0):
        self.name = f"synthetic {split} split"
        self.num_inputs = cfg.num_inputs
        self.num_classes = cfg.num_classes
        self.timesteps = cfg.timesteps
        self._size = cfg.num_samples
        self.dtype = np.dtype(bool)
        self.density = cfg.rate_hz * cfg.dt_ms / 1000.0  # expected fraction of active inputs
        seed = default_seed if cfg.seed is None else cfg.seed
        self._key = jax.random.fold_in(jax.random.PRNGKey(seed), SPLIT_IDS[split])
        self._make = jax.jit(jax.vmap(functools.partial(
            _sample, timesteps=cfg.timesteps, num_inputs=cfg.num_inputs,
            num_classes=cfg.num_classes, p=self.density), in_axes=(None, 0)))
        if self._size * cfg.timesteps * cfg.num_inputs <= COUNT_EVENTS_UP_TO:
            every = np.arange(self._size)
            self.max_events = max(capacity_of(self.load(every[i:i + 1024])[0]) for i in range(0, self._size, 1024))
        else:
            self.max_events = bernoulli_capacity(cfg.timesteps, cfg.num_inputs, self.density)

    def __len__(self) -> int:
        return self._size

    def load(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Samples at ``indices``: spikes ``[n, T, num_inputs]`` bool, labels ``[n]`` int32, nothing dropped."""
        indices = np.asarray(indices)
        if indices.size and (indices.min() < 0 or indices.max() >= self._size):
            raise IndexError(f"sample index out of range [0, {self._size})")
        # Fixed-size chunks: each new count of indices would otherwise compile anew.
        padded = np.resize(indices, -(-indices.size // _CHUNK) * _CHUNK)
        parts = [self._make(self._key, jnp.asarray(padded[i:i + _CHUNK], jnp.uint32))
                 for i in range(0, padded.size, _CHUNK)]
        x = np.concatenate([np.asarray(p[0]) for p in parts])[:indices.size]
        y = np.concatenate([np.asarray(p[1]) for p in parts])[:indices.size]
        return x, y, np.zeros(indices.size, np.int64)


def _sample(key, index, *, timesteps, num_inputs, num_classes, p):
    k_spikes, k_label = jax.random.split(jax.random.fold_in(key, index))
    spikes = jax.random.bernoulli(k_spikes, p, (timesteps, num_inputs))
    return spikes, jax.random.randint(k_label, (), 0, num_classes, jnp.int32)
