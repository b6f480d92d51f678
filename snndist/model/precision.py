"""The precision of the step's matrix products: float32, or bfloat16 inputs with float32 accumulation.

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
