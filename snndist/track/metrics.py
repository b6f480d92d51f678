"""Host-side metrics: combining shards and turning step outputs into logged floats.

Keys under ``count/`` are sums over a batch (they add across shards); every
other key is a mean over the batch's real samples (shards combine weighted by
their sample counts). NumPy only, so the coordinator needs no JAX.
"""
from __future__ import annotations

from typing import Any

import numpy as np

Metrics = dict[str, Any]


def summarize(metrics: Metrics, prefix: str = "spikes") -> dict[str, float]:
    """Floats to log; ``count/neuron_spikes/L`` becomes ``<prefix>/silent_fraction/L``, and
    ``count/dropped_events`` (recorded events past the time window) ``data/dropped_events``."""
    out = {}
    for key, value in metrics.items():
        value = np.asarray(value)
        if key.startswith("count/neuron_spikes/"):
            layer = key.rsplit("/", 1)[1]
            out[f"{prefix}/silent_fraction/{layer}"] = float((value == 0).mean())
        elif key == "count/dropped_events":
            out["data/dropped_events"] = float(value)
        elif key != "train/step_skipped":
            out[key] = float(value)
    return out


def stacked(steps: list[Metrics]) -> Metrics:
    """Several steps' metrics as one array a key, ``[steps, ...]``: what crosses a process boundary as a
    few buffers rather than one a value a step."""
    return {key: np.stack([np.asarray(m[key]) for m in steps]) for key in steps[0]}


def unstacked(metrics: Metrics) -> list[Metrics]:
    """``stacked``'s steps again (views of its arrays)."""
    count = len(next(iter(metrics.values())))
    return [{key: value[i] for key, value in metrics.items()} for i in range(count)]


def weighted_mean(parts: list[Metrics], counts: list[float]) -> Metrics:
    """Combine per-shard metrics: counts add up, means are weighted by sample count."""
    total = max(float(sum(counts)), 1.0)
    out = {}
    for key in parts[0]:
        values = [np.asarray(m[key]) for m in parts]
        if key.startswith("count/"):
            out[key] = sum(values)
        else:
            out[key] = sum(v * (n / total) for v, n in zip(values, counts))
    return out


def weighted_tree_mean(trees: list[dict], counts: list[float]) -> dict:
    """The mean of nested dicts of arrays (gradients), weighted by sample count."""
    total = max(float(sum(counts)), 1.0)
    first = trees[0]
    if isinstance(first, dict):
        return {k: weighted_tree_mean([t[k] for t in trees], counts) for k in first}
    return sum(np.asarray(t) * np.float32(n / total) for t, n in zip(trees, counts)).astype(np.asarray(first).dtype)
