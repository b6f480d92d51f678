"""Datasets of the tonic library (``pip install 'snndist[tonic]'``): ``data.tonic_dataset`` names a
class of ``tonic.datasets`` (``POKERDVS``, ``DVSGesture``, ``NMNIST``, ...) and ``data.path`` its
``save_to`` directory, which must already hold the files (nothing is downloaded).

tonic gives each sample as a structured array of events with fields ``x``,
``t`` (microseconds), and for cameras ``y`` and ``p``, and the sensor's size
``(width, height, polarities)``. Input channel: ``(p * H + y) * W + x``, x and
y divided by ``data.channel_pool``.
"""
from __future__ import annotations

import math

import numpy as np

from snndist.data.binning import Events, check_events
from snndist.errors import DataError


class TonicDataset:
    """A tonic dataset's train or test split as an ``EventSource``."""

    def __init__(self, name: str | None, directory: str, split: str, pool: int):
        try:
            import tonic.datasets
        except ImportError:
            raise DataError("data.kind=tonic needs the tonic library: pip install 'snndist[tonic]'") from None
        if split not in ("train", "test"):
            raise DataError(f"data.kind=tonic has the splits train, test, not {split!r}")
        cls = getattr(tonic.datasets, name or "", None)
        if not isinstance(cls, type):
            raise DataError(f"data.tonic_dataset={name!r}: not a dataset of tonic.datasets "
                            f"(e.g. {', '.join(sorted(tonic.datasets.__all__)[:6])}, ...)")
        try:
            self._dataset = cls(save_to=directory, train=split == "train")
        except Exception as err:  # tonic tries to download, or finds a file missing
            raise DataError(f"tonic.datasets.{name}(save_to={directory!r}): {type(err).__name__}: {err}") from None
        self.name = f"tonic.datasets.{name} ({split}) in {directory}"
        width, height, polarities = (tuple(cls.sensor_size) + (1, 1))[:3]
        self._pool = pool
        self._width, self._height = math.ceil(width / pool), math.ceil(height / pool)
        self.num_channels = self._width * self._height * polarities
        self.labels = np.asarray(self._dataset.targets, np.int64)

    def events(self, index: int) -> Events:
        events, _ = self._dataset[index]
        fields = events.dtype.names
        zeros = np.zeros(len(events), np.int64)
        x = np.asarray(events["x"], np.int64) // self._pool
        y = np.asarray(events["y"], np.int64) // self._pool if "y" in fields else zeros
        p = np.asarray(events["p"], np.int64) if "p" in fields else zeros
        channels = (p * self._height + y) * self._width + x
        times = np.asarray(events["t"], np.float64) / 1000.0  # us -> ms
        check_events(times, channels, self.num_channels, f"{self.name} sample {index}")
        return Events(times, channels)
