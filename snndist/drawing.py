"""Drawing the network's pictures in a separate, low-priority process.

A picture set costs about 0.4 s of matplotlib; a tutorial step, 3 ms. Drawn
in the training process it slowed training by half; in a process at the
lowest CPU priority it takes only the time the trainer leaves idle. The
child is started with ``spawn`` (forking a process that runs JAX is unsafe)
and never imports JAX.
"""
from __future__ import annotations

import multiprocessing
import os
import types
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np


def _lowest_priority() -> None:
    os.nice(19)


class Drawer:
    def __init__(self):
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_lowest_priority)

    def draw(self, trace, inputs: np.ndarray, **options) -> Future:
        """Start drawing ``figures.network_images`` for a trace; the future holds name -> RGB array."""
        from snndist.figures import network_images

        plain = types.SimpleNamespace(**{k: getattr(trace, k) for k in ("voltages", "spikes", "readout", "logits")})
        return self._pool.submit(network_images, plain, inputs, **options)

    def close(self) -> None:
        """Wait for the drawings under way."""
        self._pool.shutdown(wait=True)
