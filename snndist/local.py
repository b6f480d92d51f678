"""The single-process runner: one jitted step on this process's default device."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from snndist.config import Config
from snndist.data import make_dataset
from snndist.data.loader import SampleLoader
from snndist.network import init_params, network_spec
from snndist.optim import make_optimizer
from snndist.step import Metrics, init_state, make_eval_step, make_train_step, weighted_mean


class LocalRunner:
    """Holds the train state; ``step(indices)`` trains on those samples."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        spec = network_spec(cfg)
        optimizer, schedule = make_optimizer(cfg.train)
        self.state = init_state(init_params(jax.random.PRNGKey(cfg.train.seed), cfg), optimizer)
        self.loaders = {"train": SampleLoader(make_dataset(cfg.data, "train", cfg.train.seed), cfg.data)}
        self._train_step = make_train_step(spec, optimizer, schedule)
        self._eval_step = make_eval_step(spec)

    @property
    def num_samples(self) -> int:
        return len(self.loaders["train"].dataset)

    def step(self, indices: np.ndarray) -> Metrics:
        """One training step on ``indices``; metrics stay on the device until read."""
        x, y = self.loaders["train"].load(indices)
        self.state, metrics = self._train_step(self.state, jax.tree.map(jnp.asarray, x), jnp.asarray(y))
        return metrics

    def evaluate(self, split: str) -> Metrics:
        """Loss, accuracy and rates over the whole ``split``, in batches of ``train.eval_batch``."""
        if split not in self.loaders:
            self.loaders[split] = SampleLoader(make_dataset(self.cfg.data, split, self.cfg.train.seed), self.cfg.data)
        loader = self.loaders[split]
        size, batch = len(loader.dataset), self.cfg.train.eval_batch
        parts, sizes = [], []
        for start in range(0, size, batch):
            x, y = loader.load(np.arange(start, min(start + batch, size)))
            parts.append(self._eval_step(self.state.params, jax.tree.map(jnp.asarray, x), jnp.asarray(y)))
            sizes.append(len(y))
        return weighted_mean(parts, sizes)

    def params(self) -> dict:
        return jax.device_get(self.state.params)
