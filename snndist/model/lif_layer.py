"""A hidden LIF layer over a stretch of time, with a hand-written backward pass.

``lif_layer`` computes exactly what ``lax.scan`` over ``neurons.lif_step``
computes (the same operations in the same order), but its VJP is written
out: autodiff of the scan accumulates the recurrent weights' gradient as an
outer product inside the reverse time loop and keeps every intermediate of
every step, while here the reverse loop does only what is truly sequential
(the error signal through the recurrence and the membrane) and

    dV = sum_t s_{t-1}^T dI_t

is one matmul over all steps afterwards. The residuals are the layer's own
outputs (voltages and spikes) and its starting state; the surrogate
derivative is recomputed from the voltages in the reverse loop.

The layer starts from a given state and also returns its last one, so that
time can be cut into chunks (``train.remat``). The reverse loop carries the
cotangent of the state as the next step receives it, ``(c_I, c_U, c_s)``::

    ds_t = gS_t + c_s
    dU_t = gU_t + c_U + ds_t g(x_t) / (theta - U_reset)
    dI_t = c_I + (1 - b_m) R dU_t                   (= dL/d drive_t)
    c_I <- a dI_t,   c_U <- b_m dU_t,   c_s <- dI_t V^T - drop_t b_m dU_t

with ``drop_t = theta - U_reset`` (soft reset) or ``U_{t-1} - U_reset`` (hard).
What is left in the carry after step 0 is the starting state's cotangent.
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from snndist.model.neurons import LIFSpec, LIFState, lif_step
from snndist.model.precision import matmul
from snndist.model.surrogate import SpikeFn

LayerOut = tuple[jax.Array, jax.Array, LIFState]  # voltages, spikes [T, batch, n]; the state after the last step


def scanned_layer(lif: LIFSpec, spike_fn: SpikeFn, drive: jax.Array, w_rec: Optional[jax.Array],
                  start: LIFState) -> LayerOut:
    """The plain definition: ``lif_step`` in ``lax.scan``, differentiated by autodiff. ``drive [T, batch, n]``."""
    def step(state, drive_t):
        state = lif_step(lif, spike_fn, w_rec, state, drive_t)
        return state, (state.u, state.s)

    last, (voltages, spikes) = jax.lax.scan(step, start, drive)
    return voltages, spikes, last


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def lif_layer(lif: LIFSpec, spike_fn: SpikeFn, drive: jax.Array, w_rec: Optional[jax.Array],
              start: LIFState) -> LayerOut:
    """Voltages and spikes ``[T, batch, n]`` of one layer from ``start``, driven by ``drive`` (``W x_t + b``)."""
    return scanned_layer(lif, spike_fn, drive, w_rec, start)


def _forward(lif, spike_fn, drive, w_rec, start):
    voltages, spikes, last = scanned_layer(lif, spike_fn, drive, w_rec, start)
    return (voltages, spikes, last), (voltages, spikes, w_rec, start)


def _backward(lif: LIFSpec, spike_fn: SpikeFn, residuals, cotangents):
    voltages, spikes, w_rec, start = residuals
    g_voltages, g_spikes, g_last = cotangents
    scale = lif.threshold - lif.v_reset
    leak = (1.0 - lif.mem_decay) * lif.resistance
    # drop_t: how much U'_t falls per spike of step t - 1 (a constant for the soft reset).
    drop = None if lif.soft_reset else jnp.concatenate([start.u[None], voltages[:-1]]) - lif.v_reset
    w_back = None if w_rec is None else w_rec.T

    def step(carry, inputs):
        c_i, c_u, c_s = carry
        g_u, g_s, u, drop_t = inputs
        ds = g_s + c_s
        # The spike function's VJP at this step's scaled voltage: ds * g(x) for an elementwise surrogate.
        _, spike_vjp = jax.vjp(spike_fn, (u - lif.threshold) / scale)
        du = g_u + c_u + spike_vjp(ds)[0] / scale
        di = c_i + leak * du
        du_next = lif.mem_decay * du
        c_s = -(scale if drop_t is None else drop_t) * du_next
        if w_back is not None:
            c_s = c_s + matmul(di, w_back, lif.matmul_dtype)
        return (lif.syn_decay * di, du_next, c_s), di

    (c_i, c_u, c_s), d_drive = jax.lax.scan(step, (g_last.i, g_last.u, g_last.s),
                                            (g_voltages, g_spikes, voltages, drop), reverse=True)
    d_start = LIFState(c_i, c_u, c_s)
    if w_rec is None:
        return d_drive, None, d_start
    steps, batch, size = spikes.shape
    previous = jnp.concatenate([start.s[None], spikes[:-1]]).reshape(steps * batch, size)
    return d_drive, matmul(previous.T, d_drive.reshape(steps * batch, size), lif.matmul_dtype), d_start


lif_layer.defvjp(_forward, _backward)
