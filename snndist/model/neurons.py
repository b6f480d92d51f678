"""The LIF neuron with an exponential synapse: one time step, as a pure function."""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from snndist.model.precision import matmul
from snndist.model.surrogate import SpikeFn


class LIFSpec(NamedTuple):
    """Constants of one layer, derived from its config and ``dt``."""

    syn_decay: float  # a = exp(-dt / tau_syn)
    mem_decay: float  # b = exp(-dt / tau_mem)
    threshold: float
    v_reset: float
    v_rest: float
    resistance: float
    soft_reset: bool
    matmul_dtype: Optional[jnp.dtype] = None  # the recurrent product's inputs (precision.MATMUL_DTYPES)
    # How the layer walks through time (lif_layer): the input product and the weight gradients as one
    # product over all steps, outside the time loop (else step by step, inside it); time steps per loop
    # iteration.
    batched_products: bool = False
    unroll: int = 1
    # The forward pass's products with a side of spikes (bool inputs, the recurrent spikes) as int8 digit
    # products (precision.spikes_times): float32's values to about its rounding.
    int8_spikes: bool = False

    @classmethod
    def create(cls, *, dt_ms, tau_mem_ms, tau_syn_ms, threshold=1.0, v_reset=0.0, v_rest=0.0, resistance=1.0,
               reset="soft", matmul_dtype=None, batched_products=False, unroll=1,
               int8_spikes=False) -> "LIFSpec":
        return cls(math.exp(-dt_ms / tau_syn_ms), math.exp(-dt_ms / tau_mem_ms), threshold,
                   v_reset, v_rest, resistance, reset == "soft", matmul_dtype, batched_products, unroll, int8_spikes)


class LIFState(NamedTuple):
    """Per-neuron state, each ``[batch, size]``: current, voltage, last spikes."""

    i: jax.Array
    u: jax.Array
    s: jax.Array

    @classmethod
    def zeros(cls, batch: int, size: int, dtype=jnp.float32) -> "LIFState":
        z = jnp.zeros((batch, size), dtype)
        return cls(z, z, z)


def lif_step(spec: LIFSpec, spike_fn: SpikeFn, w_rec: Optional[jax.Array],
             state: LIFState, drive: jax.Array) -> LIFState:
    """Advance one layer by one step of ``dt``.

    .. math::

        I_t &= a I_{t-1} + (W x_t + b) + V s_{t-1} \\
        U'  &= U_{t-1} - (\\theta - U_{reset}) s_{t-1}          \\quad\\text{(soft reset)} \\
        U_t &= U_{rest} + (U' - U_{rest}) b_m + (1 - b_m) R I_t  \\quad\\text{(exponential Euler)} \\
        s_t &= H((U_t - \\theta) / (\\theta - U_{reset}))

    ``s_{t-1}`` is the spike of ``U_{t-1}`` with its surrogate gradient, so the
    gradient flows through the reset, as in the seed. A hard reset sets
    ``U' = U_reset`` where ``s_{t-1} = 1`` and stops the gradient through the
    voltage it drops (the seed library's convention).

    Args:
      spec: the layer's constants.
      spike_fn: Heaviside with a surrogate derivative (``surrogate.make_spike_fn``).
      w_rec: recurrent weights ``V`` ``[size, size]`` (``[from, to]``), or None.
      state: ``LIFState`` at ``t - 1``.
      drive: ``W x_t + b``, ``[batch, size]``; hoisted out of the time loop.

    Returns:
      ``LIFState`` at ``t``; its ``s`` is the layer's output.
    """
    current, u = integrate(spec, w_rec, state.i, after_reset(spec, state.u, state.s), state.s, drive)
    return LIFState(current, u, spike(spec, spike_fn, u))


def after_reset(spec: LIFSpec, u: jax.Array, s: jax.Array) -> jax.Array:
    """``U'``: the voltage ``u`` once its spikes ``s`` have reset it."""
    drop = spec.threshold - spec.v_reset if spec.soft_reset else jax.lax.stop_gradient(u) - spec.v_reset
    return u - drop * s


def integrate(spec: LIFSpec, w_rec: Optional[jax.Array], i: jax.Array, u_reset: jax.Array, s: jax.Array,
              drive: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(I_t, U_t)`` from ``I_{t-1}``, ``U'`` and ``s_{t-1}`` (read only for the recurrent product)."""
    current = spec.syn_decay * i + drive
    if w_rec is not None:
        current = current + matmul(s, w_rec, spec.matmul_dtype)
    u = spec.v_rest + (u_reset - spec.v_rest) * spec.mem_decay + (1.0 - spec.mem_decay) * spec.resistance * current
    return current, u


def spike(spec: LIFSpec, spike_fn: SpikeFn, u: jax.Array) -> jax.Array:
    """``s = H((U - theta) / (theta - U_reset))``, with the surrogate derivative."""
    return spike_fn((u - spec.threshold) / (spec.threshold - spec.v_reset))
