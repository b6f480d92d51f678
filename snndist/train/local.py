"""The single-process runner: one replica over this process's devices."""
from __future__ import annotations

import jax

from snndist.config import Config
from snndist.data.order import plan_shards
from snndist.track.metrics import Metrics
from snndist.train.compile_cache import use_compile_cache
from snndist.train.replica import Replica
from snndist.train.step import Layout


class LocalRunner:
    """A ``Runner``: ``step(indices)`` trains on those samples, split over the first ``devices`` local
    devices (all: None)."""

    def __init__(self, cfg: Config, devices: int | None = None):
        use_compile_cache()
        self.cfg = cfg
        self.layout = Layout.over(jax.local_devices()[:devices])
        self.replica = Replica(cfg, self.layout)
        self.num_samples = self.replica.num_samples("train")
        self.pending_s = 0.0  # its devices are this process's: nothing to wait for

    def ready(self) -> None:
        """Ready since the constructor."""

    def steps(self, batches, upcoming=None, expected_s: float = 0.0) -> list[Metrics]:
        plan = lambda indices: plan_shards(indices, 1, self.replica.local_devices)[0]
        return self.replica.train_steps([plan(b) for b in batches], None if upcoming is None else plan(upcoming))

    def step(self, indices, upcoming=None) -> Metrics:
        """One step of ``steps``."""
        return self.steps([indices], upcoming)[0]

    def evaluate(self, split: str) -> Metrics:
        return self.replica.evaluate(split)[0]

    def gradient(self, indices) -> dict:
        """The mean loss gradient over ``indices`` at the current parameters (no update)."""
        return self.replica.grads(plan_shards(indices, 1, self.replica.local_devices)[0])[0]

    def params(self) -> dict:
        return self.replica.params()

    def trace(self, indices) -> dict:
        return self.replica.trace(indices)

    def get_state(self) -> dict:
        return self.replica.host_state()

    def set_state(self, state: dict) -> None:
        self.replica.load_state(state)

    def topology(self) -> dict:
        return {"workers": 0, "devices_per_worker": self.replica.local_devices, "grad_sync": "local"}

    def restart(self) -> None:
        self.replica = Replica(self.cfg, self.layout)

    def grow(self) -> None:
        return None  # one process: nothing to lose or take back

    def preemption_notice(self) -> None:
        return None  # this process's own signals are the loop's StopSignal

    def check_visible(self, path: str, run_dir: str) -> None:
        return None  # one process: it wrote the file itself

    def close(self) -> None:
        return None
