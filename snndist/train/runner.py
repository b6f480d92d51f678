"""What the training loop needs of a runner: ``LocalRunner`` (this process) and the Ray
``RayRunner`` (a coordinator and worker actors) both provide it."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from snndist.track.metrics import Metrics


class Runner(Protocol):
    num_samples: int  # in the training split
    pending_s: float  # seconds spent waiting for resources (the workers', at the start and in recoveries)

    def ready(self) -> None:
        """Wait until the runner can train: a runner whose workers start in the background raises what
        stopped them here."""

    def steps(self, batches: list[np.ndarray], upcoming: np.ndarray | None = None,
              expected_s: float = 0.0) -> list[Metrics]:
        """Training steps on the global batches ``batches``, in turn; each step's metrics, which may stay on
        the device until read.

        ``upcoming``: the batch after the last, whose samples may be loaded while the steps compute.
        ``expected_s``: how long the steps should take (0: unknown); a runner that waits on workers
        gives up after ``train.step_timeout_s`` plus twice this.
        """

    def evaluate(self, split: str) -> Metrics:
        """Metrics over the whole ``split`` at the current parameters."""

    def trace(self, indices: np.ndarray) -> dict:
        """``{"trace", "inputs", "labels"}`` of a forward pass over training samples ``indices``, host arrays."""

    def get_state(self) -> dict:
        """``{params, opt_state, step, skipped}`` as host arrays and ints: what a checkpoint holds."""

    def set_state(self, state: dict) -> None:
        """Load a ``get_state()``-shaped state, whatever topology saved it."""

    def topology(self) -> dict:
        """``{workers, devices_per_worker, grad_sync}``, recorded in checkpoints."""

    def restart(self) -> None:
        """Replace lost workers; the state is then a fresh initialisation until ``set_state``."""

    def grow(self) -> str | None:
        """At a checkpoint boundary: take back workers lost earlier if their resources returned; what it did."""

    def preemption_notice(self) -> str | None:
        """Why the run must stop now (e.g. a node of the run is being drained), or None."""

    def check_visible(self, path: str, run_dir: str) -> None:
        """Raise ConfigError if some worker cannot see the new file ``path`` in ``run_dir``."""

    def close(self) -> None:
        """Release what the runner holds (workers, reservations, a Ray instance it started)."""
