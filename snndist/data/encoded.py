"""Static data (images, feature vectors) as spike trains: ``data.kind: encoded``.

The source is ``data.path``, an ``.npz`` with ``x`` (``[n, ...]`` numbers,
flattened to ``num_inputs`` features) and ``y`` (``[n]`` int labels), and
optionally ``x_test`` / ``y_test``; or, with no path, scikit-learn's bundled
``digits`` (1797 8x8 images, 10 classes, no download). Where the source has
no test split, ``data.test_fraction`` of it is held out in a fixed order.
Features are scaled to [0, 1] by the training split's range, then encoded
over ``data.timesteps`` steps (``data.encode``):

- ``rate``: an independent Bernoulli spike per step, with probability
  ``x * max_rate_hz * dt`` (a feature of 1 fires at ``max_rate_hz``);
- ``latency``: one spike per feature above ``threshold``, earlier for larger x:
  at step ``(1 - x) (T - 1)`` (``linear``) or ``(T - 1) ln(1/x) / ln(1/threshold)``
  (``log``, which spreads the strong features out).

The encoding of sample i is a pure function of (seed, split, i), like the
synthetic data's, so any worker makes exactly its own samples.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from snndist.config import DataConfig
from snndist.data.events import bernoulli_capacity
from snndist.data.splits import SPLIT_IDS, held_out
from snndist.errors import DataError


def _source(cfg: DataConfig) -> tuple[str, dict[str, np.ndarray]]:
    """(name, arrays with x and y, and maybe x_test and y_test)."""
    if cfg.path is None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        return "scikit-learn digits", {"x": digits.data, "y": digits.target}
    path = Path(cfg.path)
    if not path.is_file():
        raise DataError(f"data.path={path}: no such file (data.kind=encoded reads an .npz of x and y)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable .npz ({err})") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{path}: no '{key}' array (data.kind=encoded reads x: [n, ...] features, "
                            "y: [n] labels)")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path}: x_test and y_test go together")
    return path.name, arrays


def _features(name: str, x: np.ndarray, y: np.ndarray, num_inputs: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    if len(x) != len(y):
        raise DataError(f"{name}: {len(x)} samples in x but {len(y)} labels in y")
    if x.shape[1] != num_inputs:
        raise DataError(f"{name}: {x.shape[1]} features per sample, but data.num_inputs={num_inputs}; "
                        f"set data.num_inputs={x.shape[1]}")
    if not np.all(np.isfinite(x)):
        bad = int(np.nonzero(~np.isfinite(x).all(axis=1))[0][0])
        raise DataError(f"{name}: sample {bad} has a feature that is not a finite number")
    return x, np.asarray(y).astype(np.int64)


class EncodedStatic:
    """One split of static data, encoded as spikes on demand."""

    def __init__(self, cfg: DataConfig, split: str, default_seed: int):
        if split not in ("train", "test"):
            raise DataError(f"data.kind=encoded has the splits train, test (valid: set data.valid_fraction), "
                            f"not {split!r}")
        name, arrays = _source(cfg)
        x, y = _features(name, arrays["x"], arrays["y"], cfg.num_inputs)
        if "x_test" in arrays:
            test = _features(name, arrays["x_test"], arrays["y_test"], cfg.num_inputs)
            train = x, y
        else:
            train_rows, test_rows = held_out(len(x), cfg.test_fraction)
            train, test = (x[train_rows], y[train_rows]), (x[test_rows], y[test_rows])
        lo, hi = train[0].min(), train[0].max()
        x, y = train if split == "train" else test
        self.name = f"{name} ({split})"
        self.features = np.clip((x - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
        self.labels = y.astype(np.int32)
        bad = np.nonzero((self.labels < 0) | (self.labels >= cfg.num_classes))[0]
        if bad.size:
            raise DataError(f"{self.name}: sample {bad[0]} has label {self.labels[bad[0]]}, out of range "
                            f"[0, data.num_classes={cfg.num_classes})")
        e = cfg.encode
        self.num_inputs, self.num_classes, self.timesteps = cfg.num_inputs, cfg.num_classes, cfg.timesteps
        self.method, self.latency, self.threshold = e.method, e.latency, e.threshold
        self.p_max = e.max_rate_hz * cfg.dt_ms / 1000.0
        self.seed = (default_seed if cfg.seed is None else cfg.seed, SPLIT_IDS[split])
        mean_rate = self.features.mean() * self.p_max
        # One spike per feature above threshold for latency; the rate's mean for rate.
        self.density = float(mean_rate if e.method == "rate" else (self.features > e.threshold).mean()
                             / cfg.timesteps)
        self.max_events = (cfg.num_inputs if e.method == "latency"
                           else bernoulli_capacity(cfg.timesteps, cfg.num_inputs, self.p_max))
        self.dtype = np.dtype(bool)

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        indices = np.asarray(indices)
        spikes = np.stack([self._encode(int(i)) for i in indices]) if indices.size else \
            np.zeros((0, self.timesteps, self.num_inputs), bool)
        return spikes, self.labels[indices], np.zeros(len(indices), np.int64)

    def _encode(self, index: int) -> np.ndarray:
        x = self.features[index]
        if self.method == "rate":
            rng = np.random.default_rng([*self.seed, index])
            return rng.random((self.timesteps, self.num_inputs)) < x * self.p_max
        spikes = np.zeros((self.timesteps, self.num_inputs), bool)
        fires = x > self.threshold
        last = self.timesteps - 1
        if self.latency == "linear":
            steps = np.round((1.0 - x[fires]) * last)
        else:
            steps = np.round(last * np.log(1.0 / x[fires]) / np.log(1.0 / self.threshold))
        spikes[np.minimum(steps, last).astype(int), np.nonzero(fires)[0]] = True
        return spikes

