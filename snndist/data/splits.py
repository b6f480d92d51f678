"""Splits: ``train``, ``valid``, ``test``. A dataset without a validation split of its own can hold
``data.valid_fraction`` of its training split out as one, always the same samples."""
from __future__ import annotations

import numpy as np

SPLIT_IDS = {"train": 0, "test": 1, "valid": 2}  # mixed into the seeds of made-up samples
HOLD_OUT_SEED = 20261129  # fixed: the held-out samples do not change with train.seed or data.seed


def held_out(n: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held)``: sorted indices of ``range(n)``, ``round(fraction * n)`` of them held out."""
    order = np.random.default_rng(HOLD_OUT_SEED).permutation(n)
    count = int(round(fraction * n))
    return np.sort(order[count:]), np.sort(order[:count])


class Subset:
    """Samples ``rows`` of ``dataset``, as a dataset of their own (index i is ``rows[i]``)."""

    def __init__(self, dataset, rows: np.ndarray, name: str):
        self.dataset, self.rows, self.name = dataset, np.asarray(rows), name
        for attr in ("num_inputs", "num_classes", "timesteps", "density", "max_events", "dtype"):
            setattr(self, attr, getattr(dataset, attr))

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, indices: np.ndarray):
        return self.dataset.load(self.rows[np.asarray(indices)])
