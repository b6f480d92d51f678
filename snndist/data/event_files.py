"""Users' own event recordings: one ``.npz`` or ``.h5`` file per split in ``data.path``
(``train``, ``test``, and ``valid`` if there is one).

A file holds every sample's events one after another, and where each sample starts:

- ``times``: event times in seconds, float, >= 0;
- ``channels``: each event's channel, int, >= 0;
- ``polarity`` (optional): each event's polarity, 0 or 1;
- ``offsets``: ``[n + 1]`` int, sample i's events are ``offsets[i]:offsets[i + 1]``;
- ``y``: ``[n]`` int labels.

Input index: ``channel // data.channel_pool``, or with polarity
``2 * (channel // data.channel_pool) + polarity``; it must be below
``data.num_inputs``. The README has a ten-line script that writes one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from snndist.data.binning import Events, check_events
from snndist.errors import DataError

REQUIRED = ("times", "channels", "offsets", "y")


def split_file(directory: str, split: str) -> Path:
    root = Path(directory)
    if not root.is_dir():
        raise DataError(f"data.path={directory}: no such directory")
    for suffix in (".npz", ".h5"):
        if (root / f"{split}{suffix}").is_file():
            return root / f"{split}{suffix}"
    raise DataError(f"{root / split}.npz: no such file (nor {split}.h5); data.kind=events reads one file per split")


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        import h5py

        with h5py.File(path, "r") as f:
            return {k: np.asarray(f[k]) for k in f.keys()}
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read it ({err})") from None


class EventFile:
    """One split's file, read whole (the arrays are the events themselves): an ``EventSource``."""

    def __init__(self, directory: str, split: str, num_inputs: int, pool: int):
        path = split_file(directory, split)
        self.name = path.name
        arrays = _read(path)
        for key in REQUIRED:
            if key not in arrays:
                raise DataError(f"{path}: no '{key}' in the file (it holds {', '.join(REQUIRED)}, "
                                "and optionally polarity)")
        self._times = arrays["times"].astype(np.float64) * 1000.0  # seconds -> ms
        self._channels = arrays["channels"].astype(np.int64) // pool
        self._polarity = arrays["polarity"].astype(np.int64) if "polarity" in arrays else None
        offsets, self.labels = arrays["offsets"].astype(np.int64), arrays["y"].astype(np.int64)
        if offsets.shape != (len(self.labels) + 1,) or offsets[0] != 0 or np.any(np.diff(offsets) < 0) \
                or offsets[-1] != len(self._times):
            raise DataError(f"{path}: offsets must be {len(self.labels) + 1} non-decreasing numbers from 0 to "
                            f"the number of events, {len(self._times)}")
        if self._channels.shape != self._times.shape or (
                self._polarity is not None and self._polarity.shape != self._times.shape):
            raise DataError(f"{path}: times, channels and polarity must have one entry per event")
        self._offsets = offsets
        self.num_channels = num_inputs

    def events(self, index: int) -> Events:
        span = slice(self._offsets[index], self._offsets[index + 1])
        times, channels = self._times[span], self._channels[span]
        where = f"{self.name} sample {index}"
        if self._polarity is not None:
            polarity = self._polarity[span]
            if polarity.size and not np.isin(polarity, (0, 1)).all():
                raise DataError(f"{where}: polarity must be 0 or 1")
            channels = 2 * channels + polarity
        check_events(times, channels, self.num_channels, where)
        return Events(times, channels)
