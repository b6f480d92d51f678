"""N-MNIST, as published: ``data.path`` holds ``Train/`` and ``Test/``, each with one folder per
digit ``0`` .. ``9`` of ``<id>.bin`` recordings.

A recording is 5 bytes per event (Orchard et al. 2015): x (byte 0), y
(byte 1), polarity (bit 7 of byte 2) and a 23-bit timestamp in microseconds
(the low 7 bits of byte 2, then bytes 3 and 4). An event with y = 240 is not
an event but a timestamp overflow marker: every later timestamp grows by
2^13, as the dataset's own reader does. The sensor is 34 x 34 pixels, two
polarities; input channel ``(p * H + y) * W + x``, with x and y divided by
``data.channel_pool`` (H = W = ceil(34 / pool)).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from snndist.data.binning import Events, check_events
from snndist.errors import DataError

SIZE = 34  # pixels per side
OVERFLOW_Y = 240
OVERFLOW_US = 2**13
FOLDERS = {"train": "Train", "test": "Test"}


def read_recording(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, polarity, t_us)`` of one ``.bin`` file, overflow markers applied and removed."""
    raw = np.fromfile(path, np.uint8).astype(np.int64)
    if raw.size == 0:
        raise DataError(f"{path}: empty file (an N-MNIST recording has 5 bytes per event)")
    if raw.size % 5:
        raise DataError(f"{path}: {raw.size} bytes, not a whole number of 5-byte events (truncated?)")
    x, y, b2, b3, b4 = (raw[i::5] for i in range(5))
    t_us = ((b2 & 127) << 16) | (b3 << 8) | b4
    overflow = y == OVERFLOW_Y
    t_us = t_us + OVERFLOW_US * np.cumsum(overflow)
    keep = ~overflow
    return x[keep], y[keep], b2[keep] >> 7, t_us[keep]


class NMNISTFolder:
    """One split (``Train/`` or ``Test/``): an ``EventSource`` of its recordings."""

    def __init__(self, directory: str, split: str, pool: int):
        if split not in FOLDERS:
            raise DataError(f"data.kind=nmnist has the splits train, test, not {split!r}")
        root = Path(directory) / FOLDERS[split]
        if not root.is_dir():
            raise DataError(f"{root}: no such directory (N-MNIST's data.path holds Train/ and Test/)")
        self.name = str(root)
        self.files = sorted(root.glob("[0-9]/*.bin"))
        if not self.files:
            raise DataError(f"{root}: no recordings (expected <digit>/<id>.bin)")
        self.labels = np.array([int(f.parent.name) for f in self.files])
        self.pool = pool
        self.side = math.ceil(SIZE / pool)
        self.num_channels = 2 * self.side * self.side

    def events(self, index: int) -> Events:
        path = self.files[index]
        x, y, p, t_us = read_recording(path)
        for name, v in (("x", x), ("y", y)):
            if v.size and v.max() >= SIZE:
                raise DataError(f"{path}: {name} = {v.max()} is off the {SIZE} x {SIZE} sensor")
        channels = (p * self.side + y // self.pool) * self.side + x // self.pool
        times = t_us / 1000.0
        check_events(times, channels, self.num_channels, str(path))
        return Events(times, channels)
