"""A hidden LIF layer over a stretch of time, with a hand-written backward pass.

``lif_layer`` computes what ``lax.scan`` over ``neurons.lif_step`` computes
(the same operations in the same order, with less carried from one step
to the next; XLA may fuse them differently, so a voltage can differ in its
last bit). Its VJP is written out:
the reverse loop carries only the error through the recurrence and the
membrane; the residuals are the layer's inputs and its own outputs
(voltages and spikes), nothing else, and the surrogate derivative is
recomputed from the voltages.

Where the products that are not sequential go is the spec's choice
(``LIFSpec.batched_products``). On a CPU they stay in the time loop: one
step's inputs, weights and state fit in the caches, where one product over
all steps streams ``[T * batch, n_in]`` through memory (on 2 cores 1.3-1.7x
slower end to end). On an accelerator each loop iteration costs a few
microseconds of launches whatever it computes, and one large product runs
near the matrix units' rate: the input product ``X W + b`` is then one
product before the loop, and the weight and input gradients
(``X^T dI``, ``S_{t-1}^T dI``, ``dI W^T``) one product each after it; the
loop keeps only the recurrent ``dI V^T``.

The forward pass's products with a side of spikes, ``x_t W`` for bool data
and ``s_{t-1} V``, can run as int8 products of the weights' digits
(``LIFSpec.int8_spikes``, ``precision.spikes_times``). The weight gradients
``[x_t, 1, s_{t-1}]^T dI_t`` have such a side too, but there the digits of
``dI_t``, made at every step, cost about what the int8 product saves
(BENCHMARKS.md): they stay float.

The layer starts from a given state and also returns its last one, so that
time can be cut into chunks (``train.remat``). Going back through time, step
``t`` receives the cotangent of its state ``(c_I, c_U, c_s)`` from step
``t + 1`` (from the last state's for the last step)::

    ds_t = gS_t + c_s
    dU_t = gU_t + c_U + ds_t g(x_t) / (theta - U_reset)
    dI_t = c_I + (1 - b_m) R dU_t                   (= dL/d drive_t)
    c_I <- a dI_t,   c_U <- b_m dU_t,   c_s <- dI_t V^T - drop_t b_m dU_t
    dW += x_t^T dI_t,   dV += s_{t-1}^T dI_t,   dx_t = dI_t W^T

with ``drop_t = theta - U_reset`` (soft reset) or ``U_{t-1} - U_reset`` (hard).
What step 0 passes back is the starting state's cotangent.
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from snndist.model.neurons import LIFSpec, LIFState, after_reset, integrate, lif_step, spike
from snndist.model.precision import int8_digits, matmul, spikes_times
from snndist.model.sums import sum_leading
from snndist.model.surrogate import SpikeFn

LayerOut = tuple[jax.Array, jax.Array, LIFState]  # voltages, spikes [T, batch, n]; the state after the last step


def _drive(lif: LIFSpec, inputs_t: jax.Array, w: Optional[jax.Array], b: Optional[jax.Array]) -> jax.Array:
    """``x_t W + b`` (one step's, or every step's); without ``w``, the inputs are the drive already (event
    input, bias included)."""
    if w is None:
        return inputs_t
    product = matmul(inputs_t.astype(w.dtype), w, lif.matmul_dtype)  # [batch, n] or [T, batch, n]
    return product + b[(None,) * (product.ndim - 1)]


def _int8(lif: LIFSpec, other: Optional[jax.Array]) -> bool:
    """Whether products of spikes with ``other`` run as int8 digit products: asked for
    (``LIFSpec.int8_spikes``), and ``other`` float32, whose precision the digits keep."""
    return lif.int8_spikes and other is not None and other.dtype == jnp.float32


def scanned_layer(lif: LIFSpec, spike_fn: SpikeFn, input_grad: bool, inputs: jax.Array, w: Optional[jax.Array],
                  b: Optional[jax.Array], w_rec: Optional[jax.Array], start: LIFState) -> LayerOut:
    """The plain definition: ``lif_step`` in ``lax.scan``, differentiated by autodiff.

    ``inputs [T, batch, n_in]``: spikes (bool or float) times ``w [n_in, n]`` plus ``b``, or with
    ``w`` None the drive itself. ``input_grad``: whether anything needs the inputs' gradient.
    """
    if lif.batched_products and w is not None:  # every step's drive in one product, before the loop
        inputs, w, b = _drive(lif, inputs, w, b), None, None

    def step(state, inputs_t):
        state = lif_step(lif, spike_fn, w_rec, state, _drive(lif, inputs_t, w, b))
        return state, (state.u, state.s)

    last, (voltages, spikes) = jax.lax.scan(step, start, inputs, unroll=lif.unroll)
    return voltages, spikes, last


def _walk_forward(lif: LIFSpec, spike_fn: SpikeFn, inputs: jax.Array, w: Optional[jax.Array],
                  b: Optional[jax.Array], w_rec: Optional[jax.Array], start: LIFState) -> LayerOut:
    """``scanned_layer``'s forward pass with less in its loop, for the custom VJP (nothing differentiates it).

    The loop carries ``I`` and the voltage after its reset ``U'`` (and the spikes, for a recurrent product)
    and keeps only the voltages; every step's spikes are one op after it. On a CPU each op of a loop
    iteration costs a dispatch whatever it computes, and a body of more than 8 runs on the concurrent
    executor: the seed's layer's two loops take about half the time (BENCHMARKS.md).
    """
    if lif.batched_products and w is not None:
        inputs, w, b = _drive(lif, inputs, w, b), None, None
    recurrent = w_rec is not None
    w_digits = int8_digits(w) if _int8(lif, w) and inputs.dtype == jnp.bool_ else None
    v_digits = int8_digits(w_rec) if _int8(lif, w_rec) else None

    def step(carry, inputs_t):
        i, u_reset, s = carry
        if w_digits is None:
            drive = _drive(lif, inputs_t, w, b)
        else:
            drive = spikes_times(inputs_t.astype(jnp.int8), *w_digits) + b[None]
        if v_digits is None:
            i, u = integrate(lif, w_rec, i, u_reset, s, drive)
        else:
            i, u = integrate(lif, None, i, u_reset, s, drive + spikes_times(s.astype(jnp.int8), *v_digits))
        s = spike(lif, spike_fn, u)
        return (i, after_reset(lif, u, s), s if recurrent else None), u

    carry = (start.i, after_reset(lif, start.u, start.s), start.s if recurrent else None)
    (last_i, _, _), voltages = jax.lax.scan(step, carry, inputs, unroll=lif.unroll)
    spikes = spike(lif, spike_fn, voltages)
    return voltages, spikes, LIFState(last_i, voltages[-1], spikes[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def lif_layer(lif: LIFSpec, spike_fn: SpikeFn, input_grad: bool, inputs: jax.Array, w: Optional[jax.Array],
              b: Optional[jax.Array], w_rec: Optional[jax.Array], start: LIFState) -> LayerOut:
    """What ``scanned_layer`` computes, with the backward pass above."""
    return _walk_forward(lif, spike_fn, inputs, w, b, w_rec, start)


def _forward(lif, spike_fn, input_grad, inputs, w, b, w_rec, start):
    voltages, spikes, last = _walk_forward(lif, spike_fn, inputs, w, b, w_rec, start)
    return (voltages, spikes, last), (inputs, w, b, w_rec, voltages, spikes, start)


def _backward(lif: LIFSpec, spike_fn: SpikeFn, input_grad: bool, residuals, cotangents):
    inputs, w, b, w_rec, voltages, spikes, start = residuals
    g_voltages, g_spikes, g_last = cotangents
    scale = lif.threshold - lif.v_reset
    leak = (1.0 - lif.mem_decay) * lif.resistance
    dtype = voltages.dtype
    in_loop = not lif.batched_products
    w_back = None if w is None else w.T
    v_back = None if w_rec is None else w_rec.T
    product = lambda a, b: matmul(a, b, lif.matmul_dtype)
    # In the loop, dW, db and dV grow as one sum: [x_t, 1, s_{t-1}]^T dI_t, one product and one add a step.
    sizes = (0 if w is None else w.shape[0], 0 if b is None else 1, 0 if w_rec is None else w_rec.shape[0])

    def factors(x_t, t):
        """``[x_t, 1, s_{t-1}]`` ``[batch, sum(sizes)]``, of the parts this layer has; s_{t-1} from its voltage
        here, not from a shifted copy of all the spikes."""
        parts = []
        if w is not None:
            parts.append(x_t.astype(dtype))
        if b is not None:
            parts.append(jnp.ones((voltages.shape[1], 1), dtype))
        if v_back is not None:
            s_before = spike(lif, spike_fn, jax.lax.dynamic_index_in_dim(voltages, jnp.maximum(t - 1, 0), 0, False))
            parts.append(jnp.where(t == 0, start.s, s_before))
        return jnp.concatenate(parts, axis=1)

    def passed_back(di, du, u_before):
        """``(c_I, c_U, c_s)``: what a step with ``dI``, ``dU`` passes to the state it started from, ``U_{t-1}``."""
        du_next = lif.mem_decay * du
        c_s = -(scale if lif.soft_reset else u_before - lif.v_reset) * du_next
        if v_back is not None:
            c_s = c_s + product(di, v_back)
        return lif.syn_decay * di, du_next, c_s

    # The loop carries the step after's (dI, dU), not what it passes back: fewer values to carry and update
    # (see _walk_forward). The last step has no step after it and takes the last state's cotangent.
    def step(carry, per_step):
        di, du, d_params = carry
        g_u, g_s, u, t, x_t = per_step
        last = t == steps - 1
        c_i, c_u, c_s = (jnp.where(last, g, c) for g, c in zip(g_last, passed_back(di, du, u)))
        ds = g_s + c_s
        # The spike function's VJP at this step's scaled voltage: ds * g(x) for an elementwise surrogate.
        _, spike_vjp = jax.vjp(spike_fn, (u - lif.threshold) / scale)
        du = g_u + c_u + spike_vjp(ds)[0] / scale
        di = c_i + leak * du
        if not in_loop:
            return (di, du, d_params), di
        if d_params is not None:
            d_params = d_params + product(factors(x_t, t).T, di)
        if w is None:  # the inputs were the drive itself
            return (di, du, d_params), di
        return (di, du, d_params), product(di, w_back) if input_grad else None

    steps = voltages.shape[0]
    per_step = (g_voltages, g_spikes, voltages, jnp.arange(steps), inputs if in_loop else None)
    nothing = jnp.zeros_like(start.u)
    d_params = jnp.zeros((sum(sizes), start.u.shape[1]), dtype) if in_loop and sum(sizes) else None
    (di, du, d_params), outputs = jax.lax.scan(
        step, (nothing, nothing, d_params), per_step, reverse=True, unroll=lif.unroll)
    if in_loop:
        d_inputs = outputs if input_grad or w is None else None
        n_w, n_b, _ = sizes
        d_w = None if w is None else d_params[:n_w]
        d_b = None if b is None else d_params[n_w]
        d_v = None if w_rec is None else d_params[n_w + n_b:]
    else:  # the products over all steps, each one matmul over time and batch
        d_drive = outputs
        rows = lambda a: a.reshape(-1, a.shape[-1])
        previous = jnp.concatenate([start.s[None], spikes[:-1]])
        d_v = None if w_rec is None else product(rows(previous).T, rows(d_drive))
        if w is None:
            d_inputs, d_w, d_b = d_drive, None, None
        else:
            d_w = product(rows(inputs).astype(dtype).T, rows(d_drive))
            d_b = sum_leading(rows(d_drive))
            d_inputs = product(d_drive, w_back) if input_grad else None
    return d_inputs, d_w, d_b, d_v, LIFState(*passed_back(di, du, start.u))


lif_layer.defvjp(_forward, _backward)
