"""Sums over the leading axis, written as a product with a vector of ones.

XLA's CPU reduction over the outermost axis is slow: summing ``[100, 256,
256]`` over time took 54 ms, against 1.3 ms as ``ones @ x`` (jax 0.10.2,
2 cores), and cost the SHD-scale step about 10%.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def sum_leading(x: jax.Array) -> jax.Array:
    """``x.sum(axis=0)`` for a floating-point ``x``."""
    return jnp.tensordot(jnp.ones(x.shape[0], x.dtype), x, axes=1)
