"""A hidden LIF layer over all of time, with a hand-written backward pass.

``lif_layer`` computes exactly what ``lax.scan`` over ``neurons.lif_step``
computes (the same operations in the same order), but its VJP is written
out: autodiff of the scan accumulates the recurrent weights' gradient as an
outer product inside the reverse time loop and keeps every intermediate of
every step, while here the reverse loop does only what is truly sequential
(the error signal through the recurrence and the membrane) and

    dV = sum_t s_{t-1}^T dI_t

is one matmul over all steps afterwards. The residuals are the layer's own
outputs (voltages and spikes), nothing else; the surrogate derivative is
recomputed from the voltages in the reverse loop.

Backward recursion, with ``lam_I = dL/dI_{t+1}`` and ``lam_U = dL/dU'_{t+1}``
(``U'`` the voltage after the reset) carried from ``t + 1``::

    ds_t = gS_t + lam_I V^T - drop_{t+1} lam_U      drop = theta - U_reset (soft) or U_t - U_reset (hard)
    dU_t = gU_t + lam_U + ds_t g(x_t) / (theta - U_reset)
    dI_t = a lam_I + (1 - b_m) R dU_t               (= dL/d drive_t)
    lam_U <- b_m dU_t,  lam_I <- dI_t
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from snndist.model.neurons import LIFSpec, LIFState, lif_step
from snndist.model.surrogate import SpikeFn


def scanned_layer(lif: LIFSpec, spike_fn: SpikeFn, drive: jax.Array,
                  w_rec: Optional[jax.Array]) -> tuple[jax.Array, jax.Array]:
    """The plain definition: ``lif_step`` in ``lax.scan``, differentiated by autodiff. ``drive [T, batch, n]``."""
    def step(state, drive_t):
        state = lif_step(lif, spike_fn, w_rec, state, drive_t)
        return state, (state.u, state.s)

    zeros = LIFState.zeros(drive.shape[1], drive.shape[2], drive.dtype)
    return jax.lax.scan(step, zeros, drive)[1]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def lif_layer(lif: LIFSpec, spike_fn: SpikeFn, drive: jax.Array,
              w_rec: Optional[jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Voltages and spikes ``[T, batch, n]`` of one layer driven by ``drive [T, batch, n]`` (``W x_t + b``)."""
    return scanned_layer(lif, spike_fn, drive, w_rec)


def _forward(lif, spike_fn, drive, w_rec):
    voltages, spikes = scanned_layer(lif, spike_fn, drive, w_rec)
    return (voltages, spikes), (voltages, spikes, w_rec)


def _backward(lif: LIFSpec, spike_fn: SpikeFn, residuals, cotangents):
    voltages, spikes, w_rec = residuals
    g_voltages, g_spikes = cotangents
    scale = lif.threshold - lif.v_reset
    leak = (1.0 - lif.mem_decay) * lif.resistance
    # drop_{t+1}: how much U'_{t+1} falls per spike of step t (a constant for the soft reset).
    drop = None if lif.soft_reset else voltages - lif.v_reset
    w_back = None if w_rec is None else w_rec.T

    def step(carry, inputs):
        lam_i, lam_u = carry
        g_u, g_s, u, drop_next = inputs
        ds = g_s - (scale if drop_next is None else drop_next) * lam_u
        if w_back is not None:
            ds = ds + lam_i @ w_back
        # The spike function's VJP at this step's scaled voltage: ds * g(x) for an elementwise surrogate.
        _, spike_vjp = jax.vjp(spike_fn, (u - lif.threshold) / scale)
        du = g_u + lam_u + spike_vjp(ds)[0] / scale
        di = lif.syn_decay * lam_i + leak * du
        return (di, lif.mem_decay * du), di

    zeros = jnp.zeros(voltages.shape[1:], voltages.dtype)
    _, d_drive = jax.lax.scan(step, (zeros, zeros), (g_voltages, g_spikes, voltages, drop), reverse=True)
    if w_rec is None:
        return d_drive, None
    steps, batch, size = spikes.shape
    previous = jnp.concatenate([jnp.zeros_like(spikes[:1]), spikes[:-1]]).reshape(steps * batch, size)
    return d_drive, previous.T @ d_drive.reshape(steps * batch, size)


lif_layer.defvjp(_forward, _backward)
