"""Event recordings as the network's input: each sample's events binned into ``[T, C]`` frames.

An event source (SHD/SSC, N-MNIST, a user's files, a tonic dataset) gives,
per sample, event times in milliseconds and input channels (already pooled);
``BinnedEvents`` turns a list of samples into frames in one vectorised pass:
bin ``floor(t / dt)``, events at or past ``T`` steps dropped and counted,
several events of a channel in one bin clipped to 1 or counted.
"""
from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np

from snndist.config import DataConfig
from snndist.errors import DataError

DENSITY_SAMPLES = 64  # the first samples of a split, read to estimate its input density


class Events(NamedTuple):
    """One sample's events: times in ms (>= 0) and input channels, in any order."""

    times_ms: np.ndarray
    channels: np.ndarray


class EventSource(Protocol):
    name: str  # what error messages name: a file, or a directory
    labels: np.ndarray  # [n] int
    num_channels: int  # input channels after pooling

    def events(self, index: int) -> Events:
        """Sample ``index``'s events, checked: raises DataError naming the file and sample."""


def check_events(times: np.ndarray, channels: np.ndarray, num_channels: int, where: str) -> None:
    """DataError, naming ``where``, for events a source must never yield."""
    if times.shape != channels.shape:
        raise DataError(f"{where}: {times.size} event times but {channels.size} channels")
    if times.size and not np.all(np.isfinite(times)):
        raise DataError(f"{where}: an event time is not a finite number")
    if times.size and times.min() < 0:
        raise DataError(f"{where}: negative event time {times.min():g}")
    if channels.size and (channels.min() < 0 or channels.max() >= num_channels):
        bad = channels[(channels < 0) | (channels >= num_channels)][0]
        raise DataError(f"{where}: channel {bad} is out of range [0, {num_channels})")


def bin_events(samples: list[Events], timesteps: int, dt_ms: float, num_channels: int,
               count: bool) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``[n, T, C]`` (bool, or uint8 spike counts with ``count``) and ``[n]`` events dropped
    for falling at or after ``T * dt_ms``."""
    n = len(samples)
    sample = np.repeat(np.arange(n), [len(s.times_ms) for s in samples])
    times = np.concatenate([np.asarray(s.times_ms, np.float64) for s in samples]) if n else np.zeros(0)
    channels = np.concatenate([np.asarray(s.channels, np.int64) for s in samples]) if n else np.zeros(0, int)
    steps = np.floor(times / dt_ms).astype(np.int64)
    inside = steps < timesteps
    dropped = np.bincount(sample[~inside], minlength=n)
    frames = np.zeros((n, timesteps, num_channels), np.uint8 if count else bool)
    s, t, c = sample[inside], steps[inside], channels[inside]
    if count:
        cells, counts = np.unique((s * timesteps + t) * num_channels + c, return_counts=True)
        if counts.size and counts.max() > 255:
            raise DataError(f"{counts.max()} events of one channel in one {dt_ms:g} ms bin: more than the 255 "
                            "data.bin_count=count holds; use a smaller data.dt_ms or data.bin_count=clip")
        frames.reshape(-1)[cells] = counts
    else:
        frames[s, t, c] = True
    return frames, dropped


class BinnedEvents:
    """A split of an event dataset as frames: ``len()``, ``load(indices) -> (frames, labels, dropped)``."""

    def __init__(self, source: EventSource, cfg: DataConfig):
        self.source, self.name = source, source.name
        self.timesteps, self.dt_ms, self.count = cfg.timesteps, cfg.dt_ms, cfg.bin_count == "count"
        self.num_inputs, self.num_classes = cfg.num_inputs, cfg.num_classes
        if source.num_channels != cfg.num_inputs:
            raise DataError(f"{source.name}: {source.num_channels} input channels (data.channel_pool="
                            f"{cfg.channel_pool}), but data.num_inputs={cfg.num_inputs}; set data.num_inputs="
                            f"{source.num_channels}")
        labels = np.asarray(source.labels)
        bad = np.nonzero((labels < 0) | (labels >= cfg.num_classes))[0]
        if bad.size:
            raise DataError(f"{source.name}: sample {bad[0]} has label {labels[bad[0]]}, out of range "
                            f"[0, data.num_classes={cfg.num_classes})")
        self.labels = labels.astype(np.int32)
        head, _, _ = self.load(np.arange(min(DENSITY_SAMPLES, len(labels))))
        # Bins with a spike, over the first samples: what choosing the input encoding needs.
        self.density = float((head > 0).mean()) if head.size else 0.0
        self.max_events = None  # not known without reading every sample: events encoding needs data.max_events
        self.dtype = head.dtype

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        indices = np.asarray(indices)
        frames, dropped = bin_events([self.source.events(int(i)) for i in indices], self.timesteps, self.dt_ms,
                                     self.num_inputs, self.count)
        return frames, self.labels[indices], dropped
