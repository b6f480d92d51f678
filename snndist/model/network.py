"""The network: hidden LIF layers, a leaky readout, the loss. Pure functions.

Parameters are a plain dict pytree, weights stored ``[in, out]``::

    {"hidden0": {"w": [n_in, n0], "b": [n0], "v": [n0, n0] (recurrent only)},
     "hidden1": {...}, ...,
     "readout": {"w": [n_last, classes], "b": [classes]}}

Inputs are spike trains, either dense ``x: [batch, T, n_in]`` (bool or
float) or ``SpikeEvents`` (padded event lists, for sparse inputs), and
integer labels ``y: [batch]``. Each layer runs over all of time before the next one
starts (layers have no delays, so this is the same math as stepping them
together); ``model.lif_layer`` is one layer over time.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from snndist.model.inputs import SpikeEvents
from snndist.model.lif_layer import lif_layer
from snndist.model.neurons import LIFSpec, LIFState, spike
from snndist.model.precision import matmul
from snndist.model.sums import plus_bias, sum_leading, weighted_sum_leading
from snndist.model.surrogate import SpikeFn

# (lif, spike_fn, input_grad, inputs [T, batch, n_in], w, b, w_rec, start) -> (voltages, spikes, last state);
# see lif_layer.scanned_layer
LayerFn = Callable[..., tuple[jax.Array, jax.Array, LIFState]]


class Init(NamedTuple):
    """A weight initialiser: variance ``scale / fan_in``, truncated normal (the seed's) or uniform."""

    kind: str  # a key of INIT_DISTRIBUTIONS
    scale: float


class RateReg(NamedTuple):
    """Penalty ``strength * mean_n(relu(low - r)^2 + relu(r - high)^2)`` on a sample's neuron rates ``r`` (Hz)."""

    strength: float  # 0: off
    low_hz: float
    high_hz: float  # inf: no upper bound


class LayerSpec(NamedTuple):
    """One hidden LIF layer: size, constants, recurrence, initialisers, rate penalty."""

    size: int
    lif: LIFSpec
    recurrent: bool
    init: Init  # W
    rec_init: Init  # V, if recurrent
    rate_reg: RateReg


class NetworkSpec(NamedTuple):
    """Everything static about the network: shapes, constants, spike function."""

    num_inputs: int
    num_classes: int
    timesteps: int
    dt_ms: float
    layers: tuple[LayerSpec, ...]
    readout_decay: float  # exp(-dt / tau_readout)
    readout_init: Init
    reduce: str  # a key of REDUCTIONS
    spike_fn: SpikeFn
    matmul_dtype: Optional[jnp.dtype] = None  # the products' inputs (precision.MATMUL_DTYPES); None: as they are
    remat_steps: int = 0  # the loss walks through time in chunks of this many steps, recomputed backward; 0: off
    matmul_precision: Optional[str] = None  # JAX's precision for f32 products (jax.default_matmul_precision)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"hidden{i}" for i in range(len(self.layers)))


# Init.kind -> the distribution jax's variance_scaling draws from.
INIT_DISTRIBUTIONS = {"kaiming_normal": "truncated_normal", "kaiming_uniform": "uniform"}


def _init_weight(key, init: Init, shape: tuple[int, int]) -> jax.Array:
    distribution = INIT_DISTRIBUTIONS[init.kind]
    # variance = scale / fan_in, fan_in the first axis: weights are [in, out].
    initializer = jax.nn.initializers.variance_scaling(init.scale, "fan_in", distribution, in_axis=-2, out_axis=-1)
    return initializer(key, shape, jnp.float32)


def init_params(key: jax.Array, spec: NetworkSpec) -> dict:
    """Initial parameters: weights as the spec's initialisers say (the seed's Kaiming normal), biases 0."""
    params = {}
    fan_in = spec.num_inputs
    keys = jax.random.split(key, 2 * len(spec.layers) + 1)
    for i, layer in enumerate(spec.layers):
        p = {"w": _init_weight(keys[2 * i], layer.init, (fan_in, layer.size)),
             "b": jnp.zeros((layer.size,), jnp.float32)}
        if layer.recurrent:
            p["v"] = _init_weight(keys[2 * i + 1], layer.rec_init, (layer.size, layer.size))
        params[f"hidden{i}"] = p
        fan_in = layer.size
    params["readout"] = {"w": _init_weight(keys[-1], spec.readout_init, (fan_in, spec.num_classes)),
                         "b": jnp.zeros((spec.num_classes,), jnp.float32)}
    return params


class Trace(NamedTuple):
    """What a forward pass computes, time-major: ``[T, batch, n]`` per layer."""

    voltages: tuple[jax.Array, ...]
    spikes: tuple[jax.Array, ...]
    readout: jax.Array  # [T, batch, classes]
    logits: jax.Array  # [batch, classes], readout reduced over time


def event_drive(x: SpikeEvents, w: jax.Array, b: jax.Array, timesteps: int) -> jax.Array:
    """``W x_t + b`` for every step, time-major ``[T, batch, h]``, from event lists."""
    # Per sample: W[unit] added at row t of a [T, h] drive; padding (t = T) is dropped.
    def one_sample(times, units):
        return jnp.zeros((timesteps, w.shape[1]), w.dtype).at[times].add(w[units], mode="drop")

    return plus_bias(jax.vmap(one_sample)(x.times, x.units).transpose(1, 0, 2), b)


def hidden_layers(params: dict, x: jax.Array | SpikeEvents, spec: NetworkSpec, layer_fn: LayerFn = lif_layer,
                  starts: tuple[LIFState, ...] | None = None, timesteps: int | None = None) -> tuple[tuple, tuple, tuple]:
    """Voltages and spikes ``[T, batch, n]`` of every hidden layer, and each layer's last state.

    ``layer_fn``: ``lif_layer`` (its own backward pass) or ``scanned_layer``
    (autodiff of the plain scan, the definition it is tested against).
    ``starts``: the layers' states before the first step (default: rest);
    ``timesteps``: how many steps ``x`` covers (default: the spec's).
    """
    first = params["hidden0"]
    if isinstance(x, SpikeEvents):  # the first layer takes its drive, made from the events
        inputs, w, b = event_drive(x, first["w"], first["b"], timesteps or spec.timesteps), None, None
    else:  # time-major spikes; the layer multiplies them step by step
        inputs, w, b = jnp.swapaxes(x, 0, 1), first["w"], first["b"]
    batch = inputs.shape[1]
    voltages, spikes, lasts = [], [], []
    for i, (name, layer) in enumerate(zip(spec.names, spec.layers)):
        p = params[name]
        if i:
            inputs, w, b = spikes[-1], p["w"], p["b"]
        start = starts[i] if starts else LIFState.zeros(batch, layer.size, first["w"].dtype)
        # The first layer's spikes need no gradient: they are data.
        u, s, last = layer_fn(layer.lif, spec.spike_fn, i > 0, inputs, w, b, p.get("v"), start)
        voltages.append(u)
        spikes.append(s)
        lasts.append(last)
    return tuple(voltages), tuple(spikes), tuple(lasts)


def forward(params: dict, x: jax.Array | SpikeEvents, spec: NetworkSpec, layer_fn: LayerFn = lif_layer) -> Trace:
    """Run the network over a batch of spike trains (dense ``[batch, T, n_in]`` or events), keeping every step."""
    voltages, spikes, _ = hidden_layers(params, x, spec, layer_fn)
    out_drive = matmul(spikes[-1], params["readout"]["w"], spec.matmul_dtype) + params["readout"]["b"][None, None, :]
    readout = _integrate(spec.readout_decay, jnp.zeros_like(out_drive[0]), out_drive)
    return Trace(voltages, spikes, readout, REDUCTIONS[spec.reduce](readout))


def _integrate(decay: float, start: jax.Array, drive: jax.Array) -> jax.Array:
    """The readout's leaky integrator ``o_t = decay o_{t-1} + drive_t`` from ``start``, every step."""
    def step(o, drive_t):
        o = decay * o + drive_t
        return o, o

    return jax.lax.scan(step, start, drive)[1]


def readout_logits(params: dict, spikes: jax.Array, spec: NetworkSpec) -> jax.Array:
    """The readout reduced over time, ``[batch, classes]``, from the last layer's spikes ``[T, batch, n]``.

    The leaky integrator is linear, so its mean over time (or its last value)
    is a weighted sum of the spikes over time, then one small matmul: no time
    loop. ``max`` has no such form and integrates step by step.
    """
    readout = params["readout"]
    steps = spikes.shape[0]
    if spec.reduce == "max":
        out_drive = matmul(spikes, readout["w"], spec.matmul_dtype) + readout["b"][None, None, :]
        return _first_max(_integrate(spec.readout_decay, jnp.zeros_like(out_drive[0]), out_drive))
    weights = jnp.asarray(readout_weights(spec.readout_decay, steps, spec.reduce), spikes.dtype)
    return (matmul(weighted_sum_leading(weights, spikes), readout["w"], spec.matmul_dtype)
            + (weights.sum() * readout["b"])[None, :])


def readout_weights(decay: float, steps: int, reduce: str) -> np.ndarray:
    """``c_k`` with ``reduce_t(o_t) = sum_k c_k d_k`` for ``o_t = decay o_{t-1} + d_t``: each drive's share."""
    remaining = steps - np.arange(steps, dtype=np.float64)  # steps from k to the end, k included
    if reduce == "mean":
        return (1.0 - decay**remaining) / ((1.0 - decay) * steps)
    return decay ** (remaining - 1)  # last


def _first_max(readout: jax.Array) -> jax.Array:
    """Max over time whose gradient goes to the first step that reaches it: ties (a silent start holds
    the readout at its bias) then split the same way however time is cut into chunks."""
    return jnp.take_along_axis(readout, jnp.argmax(readout, axis=0)[None], axis=0)[0]


# The readout's reduction over time, ``[T, batch, classes] -> [batch, classes]``: the same for loss and accuracy.
REDUCTIONS = {"mean": lambda readout: readout.mean(axis=0),
              "max": _first_max,
              "last": lambda readout: readout[-1]}


def rate_penalty(rates_hz: jax.Array, reg: RateReg) -> jax.Array:
    """Per-sample firing-rate penalty ``[batch]`` from each sample's neuron rates ``[batch, n]`` (see ``RateReg``)."""
    below = jax.nn.relu(reg.low_hz - rates_hz)
    above = jax.nn.relu(rates_hz - reg.high_hz) if math.isfinite(reg.high_hz) else 0.0
    return reg.strength * (below**2 + above**2).mean(axis=-1)


class LossAux(NamedTuple):
    """Per-batch statistics returned beside the loss (weighted means over the batch)."""

    cross_entropy: jax.Array
    accuracy: jax.Array
    rate_hz: tuple[jax.Array, ...]  # per layer, mean over neurons, time and samples
    neuron_spikes: tuple[jax.Array, ...]  # per layer [n]: spikes summed over time and samples


def loss_fn(params: dict, x: jax.Array | SpikeEvents, y: jax.Array, spec: NetworkSpec,
            weights: jax.Array | None = None, layer_fn: LayerFn = lif_layer) -> tuple[jax.Array, LossAux]:
    """Mean over the batch of softmax cross-entropy plus rate penalties.

    ``weights [batch]`` (1 for a sample, 0 for padding) make it the mean over
    real samples, so that batches padded to fill every device give the same
    result as unpadded ones. Every term is a mean of per-sample values: the
    mean over shards, weighted by their sample counts, is the batch mean.
    """
    logits, counts = (_in_chunks(params, x, spec, layer_fn) if spec.remat_steps
                      else _whole(params, x, spec, layer_fn))
    to_hz = 1000.0 / (spec.dt_ms * spec.timesteps)
    if weights is None:
        weights = jnp.ones(y.shape, logits.dtype)
    mean = lambda v: jnp.sum(weights * v) / jnp.maximum(jnp.sum(weights), 1.0)  # padding-only shard: 0, not NaN
    per_sample = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    cross_entropy = mean(per_sample)
    for layer, c in zip(spec.layers, counts):
        if layer.rate_reg.strength > 0:
            per_sample = per_sample + rate_penalty(c * to_hz, layer.rate_reg)
    aux = LossAux(
        cross_entropy=cross_entropy,
        accuracy=mean((logits.argmax(-1) == y).astype(weights.dtype)),
        rate_hz=tuple(mean(c.mean(axis=-1)) * to_hz for c in counts),
        neuron_spikes=tuple(weights @ c for c in counts))
    return mean(per_sample), aux


def _whole(params: dict, x, spec: NetworkSpec, layer_fn: LayerFn) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """The readout reduced over time ``[batch, classes]``, and each layer's spikes per sample and neuron."""
    _, spikes, _ = hidden_layers(params, x, spec, layer_fn)
    return readout_logits(params, spikes[-1], spec), tuple(sum_leading(s) for s in spikes)


def _in_chunks(params: dict, x, spec: NetworkSpec, layer_fn: LayerFn) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """What ``_whole`` computes, ``spec.remat_steps`` steps at a time, each chunk recomputed in the backward
    pass (``jax.checkpoint``): memory holds one chunk's steps and the states between chunks, not all of T.

    Between chunks a layer's state is kept as ``(I, U)``: its spikes are ``spike(U)``, recomputed (and
    differentiated, surrogate included, as the layer itself would) at the next chunk's start, so the kept
    states are a third smaller."""
    chunk = spec.remat_steps
    batch = x.times.shape[0] if isinstance(x, SpikeEvents) else x.shape[0]
    readout = params["readout"]

    def piece(k):
        if isinstance(x, SpikeEvents):  # this chunk's events, re-timed; the rest fall on the dropped row
            times = x.times - k * chunk
            return SpikeEvents(jnp.where((times >= 0) & (times < chunk), times, chunk), x.units)
        return jax.lax.dynamic_slice_in_dim(x, k * chunk, chunk, axis=1)

    def with_spikes(kept, k):
        """Each layer's state from its kept ``(I, U)``: at rest (no spikes) before the first chunk."""
        return tuple(LIFState(i, u, jnp.where(k > 0, spike(layer.lif, spec.spike_fn, u), 0.0))
                     for (i, u), layer in zip(kept, spec.layers))

    @jax.checkpoint
    def step(carry, k):
        kept, o, reduced, counts = carry
        _, spikes, states = hidden_layers(params, piece(k), spec, layer_fn, with_spikes(kept, k), chunk)
        out = _integrate(spec.readout_decay, o,
                         matmul(spikes[-1], readout["w"], spec.matmul_dtype) + readout["b"][None, None, :])
        if spec.reduce == "max":  # a later chunk takes over only above the max so far: the first step wins
            highest = _first_max(out)
            reduced = jnp.where(highest > reduced, highest, reduced)
        else:
            reduced = reduced + sum_leading(out) if spec.reduce == "mean" else out[-1]
        return ((tuple((state.i, state.u) for state in states), out[-1], reduced,
                 tuple(c + sum_leading(s) for c, s in zip(counts, spikes))), None)

    dtype = readout["w"].dtype
    logits0 = jnp.zeros((batch, spec.num_classes), dtype)
    start = (tuple(LIFState.zeros(batch, layer.size, dtype)[:2] for layer in spec.layers), logits0,
             jnp.full_like(logits0, -jnp.inf) if spec.reduce == "max" else logits0,
             tuple(jnp.zeros((batch, layer.size), dtype) for layer in spec.layers))
    (_, _, reduced, counts), _ = jax.lax.scan(step, start, jnp.arange(spec.timesteps // chunk))
    return (reduced / spec.timesteps if spec.reduce == "mean" else reduced), counts
