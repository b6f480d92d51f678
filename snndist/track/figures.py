"""Figures of what a network does: spike rasters, voltages, readout, rates, loss.

Pure functions of numpy arrays (jax arrays are converted) that return a
``matplotlib.figure.Figure`` drawn on an Agg canvas: no pyplot state, no
display. ``snndist plot`` draws with them; during training, W&B gets the
same pictures drawn far faster, without axes, by ``snndist.pixels``.
"""
from __future__ import annotations

import io
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
from etils import epath
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

WIDTH_IN = 6.0
HEIGHT_IN = 3.0
DPI = 100


def _figure(height: float = HEIGHT_IN, width: float = WIDTH_IN) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _array(x: Any, ndim: int, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == ndim - 1:
        a = a[:, None] if ndim == 2 else a
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {a.shape}")
    return a


def _time_ms(steps: int, dt_ms: float) -> np.ndarray:
    return np.arange(steps) * dt_ms


def spike_raster(spikes: Any, title: str = "spikes", dt_ms: float = 1.0) -> Figure:
    """``spikes: [T, n]`` (bool or 0/1): one dot per spike at (time, neuron)."""
    s = _array(spikes, 2, "spikes")
    steps, n = s.shape
    t, neuron = np.nonzero(s > 0)
    fig = _figure()
    ax = fig.add_subplot()
    ax.scatter(t * dt_ms, neuron, s=4 if n > 20 else 12, marker="|" if n <= 20 else ".",
               color="black", linewidths=1.0)
    ax.set_xlim(-0.5 * dt_ms, steps * dt_ms)
    ax.set_ylim(-0.5, n - 0.5)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("neuron")
    ax.set_title(f"{title}  ({t.size} spikes, {n} neurons)", fontsize=10)
    return fig


def voltage_traces(voltages: Any, spikes: Any | None = None, threshold: float = 1.0, dt_ms: float = 1.0,
                   title: str = "membrane voltage") -> Figure:
    """``voltages: [T, k]`` (k up to ~8): one small panel per neuron, the
    threshold dashed, spikes (``[T, k]``) marked with red ticks."""
    v = _array(voltages, 2, "voltages").astype(np.float64)
    steps, k = v.shape
    s = None if spikes is None else _array(spikes, 2, "spikes")
    if s is not None and s.shape != v.shape:
        raise ValueError(f"spikes shape {s.shape} differs from voltages shape {v.shape}")
    t = _time_ms(steps, dt_ms)
    fig = _figure(height=max(HEIGHT_IN, 0.3 + 0.7 * k))
    axes = fig.subplots(max(k, 1), 1, sharex=True, squeeze=False)[:, 0]
    for i, ax in enumerate(axes):
        if i >= k:
            ax.text(0.5, 0.5, "no neurons", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.plot(t, v[:, i], lw=0.8, color="tab:blue")
        ax.axhline(threshold, ls="--", lw=0.7, color="gray")
        if s is not None:
            when = t[s[:, i] > 0]
            if when.size:
                ax.plot(when, np.full(when.shape, threshold), "|", color="tab:red", ms=7, mew=1.2)
        ax.set_ylabel(f"n{i}", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[-1].set_xlabel("time (ms)")
    axes[0].set_title(title, fontsize=10)
    return fig


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    steps, values = [], []
    for row in rows:
        v, step = row.get(key), row.get("step")
        if step is None or v is None or isinstance(v, bool):
            continue
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            steps.append(float(step))
            values.append(v)
    return np.asarray(steps), np.asarray(values)


def loss_curve(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """From ``metrics.jsonl`` rows (``step``, ``train/loss``, optionally
    ``eval/loss``, ``train/accuracy``, ``eval/accuracy``): loss (log scale
    where every value is positive) and, if logged, accuracy against step."""
    losses = {k: _series(rows, k) for k in ("train/loss", "eval/loss")}
    accuracies = {k: _series(rows, k) for k in ("train/accuracy", "eval/accuracy")}
    accuracies = {k: xy for k, xy in accuracies.items() if xy[0].size}
    fig = _figure(width=WIDTH_IN if not accuracies else 8.0)
    axes = fig.subplots(1, 2 if accuracies else 1, squeeze=False)[0]
    ax = axes[0]
    positive = True
    for key, (x, y) in losses.items():
        if x.size:
            ax.plot(x, y, lw=1.0, marker="." if x.size < 50 else None, label=key)
            positive &= bool((y > 0).all())
    if not any(x.size for x, _ in losses.values()):
        ax.text(0.5, 0.5, "no loss logged", ha="center", va="center", transform=ax.transAxes)
    else:
        if positive:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("loss", fontsize=10)
    if accuracies:
        ax = axes[1]
        for key, (x, y) in accuracies.items():
            ax.plot(x, y, lw=1.0, marker="." if x.size < 50 else None, label=key)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("step")
        ax.set_ylabel("accuracy")
        ax.set_title("accuracy", fontsize=10)
        ax.legend(fontsize=7)
    return fig


def save_png(fig: Figure, path: str | os.PathLike) -> epath.Path:
    """Write ``fig`` as a PNG at ``path`` (local or gs://; parents created) and close it."""
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = io.BytesIO()
    try:
        fig.savefig(png, format="png", dpi=fig.dpi)
    finally:
        fig.clear()  # frees its artists; no pyplot registry holds these figures
    path.write_bytes(png.getvalue())
    return path
