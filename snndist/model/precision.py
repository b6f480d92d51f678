"""The precision of the step's matrix products: float32, or bfloat16 inputs with float32 accumulation; and
products with a side of spikes as int8 products of float32's digits.

On accelerators bf16 products run at several times the f32 rate; the state
(currents, voltages), the elementwise updates and every sum stay float32.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

# train.precision -> the dtype the products' inputs are rounded to (None: as they are)
MATMUL_DTYPES = {"f32": None, "bf16": jnp.bfloat16}


def matmul(a: jax.Array, b: jax.Array, dtype: Optional[jnp.dtype]) -> jax.Array:
    """``a @ b``; with ``dtype``, both rounded to it and the product accumulated in float32."""
    if dtype is None:
        return a @ b
    return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


# Products with a side of spikes (0 or 1) as int8 products: the other side, per column, as a fixed-point
# number of 3 balanced base-256 digits. The 0/1 side times each digit sums exactly in int32, so the only
# rounding is the fixed point's, at most 2^-24 of the column's largest value (f32's own is 2^-24 of each
# product and partial sum). XLA's CPU int8 products run at about 5x its f32 rate with AMX tiles, so three of
# them beat one f32 product there (BENCHMARKS.md; not with AVX-512 VNNI alone).
DIGITS = 3
# The largest value's fixed point: below the 127 * (1 + 256 + 256^2) = 8,355,711 that 3 balanced digits
# reach, with room for the division's rounding.
_UNITS = 2.0 ** 23 - 2.0 ** 18
_HALF_EACH = 128 * (1 + 256 + 256 ** 2)


def int8_digits(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``a [k, n]`` float32 as ``(digits [k, 3 n] int8, scale [1, n])``, the lowest digit's columns first:
    ``a ~= (d_0 + 256 d_1 + 256^2 d_2) * scale``. A NaN or infinity in a column makes its scale, and so
    every product with that column, non-finite too."""
    top = jnp.max(jnp.abs(a), axis=0, keepdims=True)
    poison = jnp.sum(a * 0.0, axis=0, keepdims=True)  # NaN where a NaN or infinity is: XLA's max may drop NaN
    scale = jnp.where(top == 0, 1.0, top / _UNITS) + poison
    # The fixed point plus 128 in each digit's place is >= 0: its plain base-256 digits, less 128, are the
    # balanced ones, each computed on its own.
    shifted = jnp.round(a / scale).astype(jnp.int32) + _HALF_EACH
    digits = [((shifted >> (8 * k)) & 255) - 128 for k in range(DIGITS)]
    return jnp.concatenate(digits, axis=1).astype(jnp.int8), scale


def spikes_times(spikes: jax.Array, digits: jax.Array, scale: jax.Array) -> jax.Array:
    """``spikes @ a`` (float32) for ``spikes [m, k]`` int8 0s and 1s and ``int8_digits(a)``."""
    counts = jnp.dot(spikes, digits, preferred_element_type=jnp.int32)  # each exact: |count| <= 128 k < 2^24
    d0, d1, d2 = (part.astype(jnp.float32) for part in jnp.split(counts, DIGITS, axis=1))
    return ((d2 * 65536.0 + d1 * 256.0) + d0) * scale
