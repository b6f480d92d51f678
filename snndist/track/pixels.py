"""The network's pictures drawn straight into RGB arrays, for W&B during training.

A matplotlib figure costs 50-130 ms to draw; a tutorial step, 3 ms. These
few NumPy operations draw the same content (rasters, voltage traces, readout
traces, a rate histogram) in about a millisecond, without axes: W&B shows the
name and the caption says what the axes are. ``snndist plot`` keeps the
matplotlib figures, with axes.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

WHITE, BLACK, GREY, RED = (255, 255, 255), (0, 0, 0), (190, 190, 190), (220, 40, 40)
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
STRIP = 48  # pixel rows per trace
WIDTH = 200  # one column per step at the tutorial's T = 200


def _canvas(height: int, width: int = WIDTH) -> np.ndarray:
    return np.full((height, width, 3), 255, np.uint8)


def _columns(steps: int, width: int = WIDTH) -> np.ndarray:
    """The pixel column of each time step."""
    return np.minimum((np.arange(steps) * width) // max(steps, 1), width - 1)


def raster(spikes: np.ndarray) -> np.ndarray:
    """``spikes [T, n]`` -> one row band per neuron, a black tick per spike."""
    steps, n = spikes.shape
    band = max(1, min(4, 200 // max(n, 1)))
    img = _canvas(n * band)
    t, neuron = np.nonzero(spikes > 0)
    cols = _columns(steps)[t]
    for dy in range(band):
        img[neuron * band + dy, cols] = BLACK
    return img


def _trace_into(img: np.ndarray, top: int, values: np.ndarray, lo: float, hi: float, colour) -> None:
    """Draw ``values [T]`` as a connected line in rows ``top .. top + STRIP``."""
    rows = top + STRIP - 1 - np.round((values - lo) / max(hi - lo, 1e-9) * (STRIP - 1)).astype(int)
    rows = np.clip(rows, top, top + STRIP - 1)
    cols = np.append(_columns(len(values), img.shape[1]), img.shape[1])
    for i in range(len(values)):
        a, b = (rows[i - 1], rows[i]) if i else (rows[i], rows[i])
        img[min(a, b):max(a, b) + 1, cols[i]:max(cols[i + 1], cols[i] + 1)] = colour


def voltages(v: np.ndarray, spikes: np.ndarray, threshold: float) -> np.ndarray:
    """``v, spikes [T, k]`` -> one strip per neuron: voltage, threshold (grey), spikes (red, top)."""
    steps, k = v.shape
    img = _canvas(k * STRIP)
    lo, hi = min(float(v.min()), 0.0), max(float(v.max()), threshold) * 1.05
    cols = _columns(steps)
    for j in range(k):
        top = j * STRIP
        threshold_row = top + STRIP - 1 - int(round((threshold - lo) / max(hi - lo, 1e-9) * (STRIP - 1)))
        img[threshold_row, ::4] = GREY
        _trace_into(img, top, v[:, j], lo, hi, BLACK)
        img[top:top + 3, cols[spikes[:, j] > 0]] = RED
    return img


def readout(o: np.ndarray) -> np.ndarray:
    """``o [T, classes]`` -> one line per class, in the same strip, in turn's colours."""
    img = _canvas(2 * STRIP)
    lo, hi = float(o.min()), float(o.max())
    for c in range(o.shape[1]):
        _trace_into(img, 0, o[:, c], lo, hi, COLOURS[c % len(COLOURS)])
    return np.repeat(img, 2, axis=0)


def histogram(values: np.ndarray, bins: int = 20) -> np.ndarray:
    """Bars of a histogram of ``values``."""
    counts, _ = np.histogram(values, bins=bins)
    img = _canvas(2 * STRIP, bins * 10)
    heights = np.round(counts / max(counts.max(), 1) * (2 * STRIP - 1)).astype(int)
    for b, h in enumerate(heights):
        if h:
            img[2 * STRIP - h:, b * 10 + 1:b * 10 + 9] = COLOURS[0]
    return img


def firing_rates_hz(spikes: np.ndarray, dt_ms: float) -> np.ndarray:
    """Per-neuron rate over time and batch, ``spikes [T, batch, n]`` -> ``[n]`` in Hz."""
    return np.asarray(spikes, np.float64).mean(axis=(0, 1)) * (1000.0 / dt_ms)


def network_pixels(trace: Any, inputs: np.ndarray, sample: int, dt_ms: float, thresholds: Sequence[float],
                   label: int | None = None, max_neurons: int = 6) -> dict[str, tuple[np.ndarray, str]]:
    """name -> (RGB array, caption) for one sample of a forward ``trace`` ([T, batch, n] arrays)."""
    steps = inputs.shape[1]
    span = f"time 0-{steps * dt_ms:g} ms left to right"
    out = {"images/input_raster": (raster(inputs[sample]), f"input spikes, sample {sample}; {span}; one row "
                                                           "per input")}
    for i, (v, s) in enumerate(zip(trace.voltages, trace.spikes)):
        layer = f"hidden{i}"
        k = min(max_neurons, v.shape[-1])
        out[f"images/hidden_raster/{layer}"] = (raster(s[:, sample]), f"{layer} spikes; {span}; one row per neuron")
        out[f"images/voltage/{layer}"] = (voltages(v[:, sample, :k], s[:, sample, :k], thresholds[i]),
                                          f"{layer} membrane voltage of neurons 0-{k - 1}; grey: threshold; "
                                          f"red: spikes; {span}")
        rates = firing_rates_hz(s, dt_ms)
        out[f"images/rate_hist/{layer}"] = (histogram(rates), f"{layer} firing rates, {rates.min():.1f} to "
                                                              f"{rates.max():.1f} Hz, 20 bins")
    predicted = int(np.asarray(trace.logits)[sample].argmax())
    out["images/readout"] = (readout(trace.readout[:, sample]),
                             f"readout per class (blue 0, orange 1, ...); predicted {predicted}"
                             + (f", label {label}" if label is not None else "") + f"; {span}")
    return out
