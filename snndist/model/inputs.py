"""The network's sparse input: spike trains as padded event lists.

Sample ``b`` holds up to ``capacity`` events ``(times[b, k], units[b, k])``;
unused slots have ``times = T``, one past the last step, and are dropped by
the input projection. At the seed's 5 Hz (0.5% of inputs active per step) this
is 40x less data than the dense ``[T, n]`` raster, and the projection and its
weight gradient touch only the events.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class SpikeEvents(NamedTuple):
    times: np.ndarray  # [batch, capacity] int32, in [0, T]; T marks padding
    units: np.ndarray  # [batch, capacity] int32, in [0, n_in)
