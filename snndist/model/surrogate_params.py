"""Each surrogate family's parameters and their defaults: plain data, no JAX,
read by the spike functions (``surrogate``) and by config validation."""
from __future__ import annotations

SURROGATE_DEFAULTS: dict[str, dict[str, float]] = {
    "relu": {"alpha": 0.3, "width": 1.0},  # the seed's ReluGrad
    "sigmoid": {"alpha": 4.0},
    "fast_sigmoid": {"alpha": 10.0},  # SuperSpike
    "arctan": {"alpha": 2.0},
    "gaussian": {"alpha": 1.0, "sigma": 0.5},
}
