"""One replica of the network on a device mesh: what a worker, or the local trainer, holds.

No Ray here. The mesh is either this process's devices or, under XLA
gradient sync, every worker's devices (after ``jax.distributed`` joined
them); each process then feeds only its own rows of a global batch.
"""
from __future__ import annotations

import hashlib
import time

import jax
import numpy as np

from snndist.config import Config
from snndist.data.datasets import make_dataset
from snndist.data.loader import SampleLoader
from snndist.data.order import Shard, plan_shards
from snndist.model.network import forward, init_params
from snndist.track.metrics import Metrics, weighted_mean
from snndist.train.optim import make_optimizer
from snndist.train.spec import network_spec
from snndist.train.step import (Layout, TrainState, make_apply_step, make_eval_step, make_grad_step, make_init,
                                make_train_step, to_host)


class Replica:
    def __init__(self, cfg: Config, layout: Layout, data_on_device: bool | None = None):
        """``data_on_device``: once the host cache holds a split whole, keep it on the devices and gather
        each batch there (default: on accelerators, where a host gather and copy per step cost more than
        the step itself at SHD scale; on a CPU the "device" is the host already)."""
        self.cfg = cfg
        self.layout = layout
        platform = layout.mesh.devices.flat[0].platform  # what the step runs on: picks the time loop and data path
        self.data_on_device = platform != "cpu" if data_on_device is None else data_on_device
        self._resident: dict[str, tuple] = {}  # split -> ((x, y) on the devices, dropped events on the host)
        self._gather = jax.jit(lambda data, rows: jax.tree.map(lambda a: a[rows], data),
                               out_shardings=layout.batch)
        self.spec = spec = network_spec(cfg, platform=platform)
        optimizer, schedule = make_optimizer(cfg.train)
        self.state = make_init(layout, lambda key: init_params(key, spec), optimizer)(
            jax.random.PRNGKey(cfg.train.seed))
        self._loaders: dict[str, SampleLoader] = {}
        nan_steps = cfg.train.debug_nan_steps
        self._train_step = make_train_step(spec, optimizer, schedule, layout, nan_steps)
        self._grad_step = make_grad_step(spec, layout)
        self._apply_step = make_apply_step(optimizer, schedule, layout, nan_steps)
        self._eval_step = make_eval_step(spec, layout)
        self._trace = jax.jit(self._traced)  # on the default device
        # Processes sharing the mesh; each feeds 1/processes of every global batch.
        self.processes = layout.size // len(layout.mesh.local_devices)

    @property
    def local_devices(self) -> int:
        return len(self.layout.mesh.local_devices)

    def loader(self, split: str) -> SampleLoader:
        if split not in self._loaders:
            dataset = make_dataset(self.cfg.data, split, self.cfg.train.seed)
            self._loaders[split] = SampleLoader(dataset, self.cfg.data, self.spec.layers[0])
        return self._loaders[split]

    def num_samples(self, split: str = "train") -> int:
        return len(self.loader(split).dataset)

    def _global_batch(self, shard: Shard, split: str):
        """This process's rows -> arrays of the global batch, split over the mesh."""
        began = time.perf_counter()

        def put(local):
            local = np.asarray(local)
            if self.processes == 1:  # 20x cheaper than the general call below
                return jax.device_put(local, self.layout.batch)
            shape = (local.shape[0] * self.processes, *local.shape[1:])
            return jax.make_array_from_process_local_data(self.layout.batch, local, shape)

        resident = self._resident_split(split)
        if resident is None:
            x, y, dropped = self.loader(split).load(shard.indices)
            x, y = jax.tree.map(put, x), put(y)
        else:
            (x, y), dropped = self._gather(resident[0], shard.indices), resident[1][shard.indices]
        self.dropped = float(dropped @ shard.weights)  # past the time window, in this shard's real samples
        batch = x, y, put(shard.weights)
        self.data_s = time.perf_counter() - began
        return batch

    def _resident_split(self, split: str):
        """The split on the devices, once the loader holds all of it (one process: the others of a global
        mesh feed their own rows)."""
        if split not in self._resident and self.data_on_device and self.processes == 1:
            whole = self.loader(split).whole()
            if whole is not None:
                x, y, dropped = whole
                self._resident[split] = jax.device_put((x, y), self.layout.replicated), dropped
        return self._resident.get(split)

    def _host_metrics(self) -> Metrics:
        return {"perf/data_s": self.data_s, "count/dropped_events": self.dropped}

    def train_step(self, shard: Shard, upcoming: Shard | None = None) -> Metrics:
        """A whole step (the gradient mean, if any, is inside the jitted step); device metrics.

        ``upcoming``: the next step's shard, loaded into the cache while this step computes.
        """
        self.state, metrics = self._train_step(self.state, *self._global_batch(shard, "train"))
        if upcoming is not None:  # the step was only dispatched: this overlaps it
            self.loader("train").prefetch(upcoming.indices)
        return {**metrics, **self._host_metrics()}

    def train_steps(self, shards: list[Shard], upcoming: Shard | None = None) -> list[Metrics]:
        """``train_step`` on each shard in turn, dispatched without waiting: each loads the next while the
        device computes."""
        return [self.train_step(shard, following) for shard, following in zip(shards, [*shards[1:], upcoming])]

    def step_memory_bytes(self, shard: Shard) -> int:
        """Bytes XLA plans for one train step on this shard: arguments, outputs and temporaries."""
        memory = self._train_step.lower(self.state, *self._global_batch(shard, "train")).compile().memory_analysis()
        return int(memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
                   - memory.alias_size_in_bytes)

    def grads(self, shard: Shard, upcoming: Shard | None = None) -> tuple[dict, Metrics]:
        """This shard's mean gradient and metrics, on the host (coordinator sync)."""
        grads, metrics = self._grad_step(self.state.params, *self._global_batch(shard, "train"))
        if upcoming is not None:
            self.loader("train").prefetch(upcoming.indices)
        return to_host(grads), {**to_host(metrics), **self._host_metrics()}

    def apply(self, grads: dict, loss: float) -> Metrics:
        """Apply the mean gradient every replica received (coordinator sync); host metrics."""
        put = lambda a: jax.device_put(np.asarray(a), self.layout.replicated)
        self.state, metrics = self._apply_step(self.state, jax.tree.map(put, grads), put(np.float32(loss)))
        return to_host(metrics)

    def evaluate(self, split: str, rank: int = 0, workers: int = 1) -> tuple[Metrics, float]:
        """Metrics over the whole split, and the number of samples they cover.

        Each eval batch is planned as a training batch is; this replica takes
        the shard of ``rank``. Over a global mesh (``processes > 1``) every
        worker must call this together and each gets the global result.
        """
        size, batch = self.num_samples(split), self.cfg.train.eval_batch
        parts, counts = [], []
        for start in range(0, size, batch):
            indices = np.arange(start, min(start + batch, size))
            # A short final batch is padded to the full size: one compiled shape.
            shard = plan_shards(indices, workers, self.local_devices, min_rows=batch)[rank]
            parts.append(to_host(self._eval_step(self.state.params, *self._global_batch(shard, split))))
            counts.append(float(len(indices)) if self.processes > 1 else float(shard.weights.sum()))
        return weighted_mean(parts, counts), float(sum(counts))

    def params(self) -> dict:
        return to_host(self.state.params)

    def _traced(self, params: dict, x):
        with jax.default_matmul_precision(self.spec.matmul_precision):
            return forward(params, x, self.spec)

    def trace(self, indices: np.ndarray, split: str = "train") -> dict:
        """Voltages, spikes and readout of samples ``indices`` (host arrays), for pictures.

        Runs on this process's default device from a host copy of the
        parameters: no collectives, so one worker can answer alone.
        """
        x, y, _ = self.loader(split).dataset.load(np.asarray(indices))
        trace = jax.tree.map(np.asarray, self._trace(self.params(), x))
        return {"trace": trace, "inputs": x, "labels": y}

    def host_state(self) -> dict:
        """Everything a checkpoint holds of the train state, as host arrays and ints."""
        return {"params": self.params(), "opt_state": to_host(self.state.opt_state),
                "step": int(to_host(self.state.step)), "skipped": int(to_host(self.state.skipped))}

    def load_state(self, state: dict) -> None:
        """Replace the train state by ``host_state()``-shaped host values, on this mesh's layout."""
        def put(value):
            value = np.asarray(value)
            return jax.make_array_from_callback(value.shape, self.layout.replicated, lambda index: value[index])

        self.state = TrainState(step=put(np.int32(state["step"])), params=jax.tree.map(put, state["params"]),
                                opt_state=jax.tree.map(put, state["opt_state"]),
                                skipped=put(np.int32(state["skipped"])))

    def digest(self) -> str:
        """SHA-256 of the parameters' bytes: replicas that drifted apart differ here."""
        h = hashlib.sha256()
        for leaf in jax.tree.leaves(self.params()):
            h.update(np.ascontiguousarray(leaf).tobytes())
        return h.hexdigest()
