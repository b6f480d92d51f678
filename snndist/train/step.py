"""The train and eval steps: jitted pure functions over one ``TrainState``.

A step is ``compute_grads`` (forward + BPTT on a batch or shard) followed by
``apply_grads`` (optax update). Every jitted function here is laid out over a
``Mesh`` with one axis, ``data``: the batch is split over it, parameters and
optimiser state are replicated. The mesh is this process's devices (single
process, or a worker under coordinator gradient sync, where the jitted
``grad_step`` and ``apply_step`` run with a host-side mean in between) or
every worker's devices (XLA gradient sync: ``train_step`` over the global
mesh, whose collectives average the gradient).

Metric names are the ones logged (see ``snndist.metrics`` for how shards'
metrics combine).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from snndist.model.network import NetworkSpec, loss_fn

Metrics = dict[str, Any]
DATA_AXIS = "data"


class TrainState(NamedTuple):
    step: jax.Array  # int32: steps taken, skipped ones included
    params: dict
    opt_state: Any
    skipped: jax.Array  # int32: steps skipped for a non-finite loss or gradient


def init_state(params: dict, optimizer: optax.GradientTransformation) -> TrainState:
    # Two buffers, not one: the jitted step donates the state, and XLA refuses
    # to donate the same buffer twice.
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), jnp.zeros((), jnp.int32))


def compute_grads(params: dict, x, y: jax.Array, weights: jax.Array, spec: NetworkSpec) -> tuple[dict, Metrics]:
    """Mean loss gradient over the batch's real samples, and the batch's metrics."""
    # The backward pass is traced here too, inside the precision's scope.
    with jax.default_matmul_precision(spec.matmul_precision):
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y, spec, weights)
    metrics = {"train/loss": loss, "train/cross_entropy": aux.cross_entropy, "train/accuracy": aux.accuracy}
    for name, rate, counts in zip(spec.names, aux.rate_hz, aux.neuron_spikes):
        metrics[f"spikes/rate_hz/{name}"] = rate
        metrics[f"count/neuron_spikes/{name}"] = counts
    return grads, metrics


def apply_grads(state: TrainState, grads: dict, loss: jax.Array, optimizer: optax.GradientTransformation,
                schedule: optax.Schedule, nan_steps: tuple[int, ...] = ()) -> tuple[TrainState, Metrics]:
    """One optax update; skipped (state unchanged but ``step``) if anything is non-finite.

    ``nan_steps`` (1-based step numbers) is fault injection for tests: those
    steps' gradients are replaced by NaN.
    """
    if nan_steps:
        poisoned = jnp.isin(state.step + 1, jnp.asarray(nan_steps))
        grads = jax.tree.map(lambda g: jnp.where(poisoned, jnp.nan, g), grads)
    finite = jnp.isfinite(loss) & jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jnp.where(finite, new, old)
    new_state = TrainState(
        step=state.step + 1,
        params=jax.tree.map(keep, params, state.params),
        opt_state=jax.tree.map(keep, opt_state, state.opt_state),
        skipped=state.skipped + (~finite).astype(jnp.int32))
    metrics = {"train/grad_norm": optax.tree.norm(grads), "train/param_norm": optax.tree.norm(new_state.params),
               "train/lr": schedule(state.step), "train/skipped_steps": new_state.skipped,
               "train/step_skipped": ~finite}
    return new_state, metrics


def eval_metrics(params: dict, x, y: jax.Array, weights: jax.Array, spec: NetworkSpec) -> Metrics:
    with jax.default_matmul_precision(spec.matmul_precision):
        loss, aux = loss_fn(params, x, y, spec, weights)
    metrics = {"eval/loss": loss, "eval/cross_entropy": aux.cross_entropy, "eval/accuracy": aux.accuracy}
    for name, rate, counts in zip(spec.names, aux.rate_hz, aux.neuron_spikes):
        metrics[f"eval/rate_hz/{name}"] = rate
        metrics[f"count/neuron_spikes/{name}"] = counts
    return metrics


# ------------------------------------------------------------- jitted, laid out on a mesh
class Layout(NamedTuple):
    mesh: Mesh
    replicated: NamedSharding
    batch: NamedSharding  # leading axis split over the mesh

    @classmethod
    def over(cls, devices) -> "Layout":
        mesh = Mesh(np.asarray(devices), (DATA_AXIS,))
        return cls(mesh, NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec(DATA_AXIS)))

    @property
    def size(self) -> int:
        return self.mesh.size


def make_init(layout: Layout, init_params_fn, optimizer: optax.GradientTransformation):
    """``init(key) -> TrainState``, made replicated on the mesh by every process alike."""
    return jax.jit(lambda key: init_state(init_params_fn(key), optimizer), out_shardings=layout.replicated)


def _per_device(fn, layout: Layout):
    """Run ``fn(params, x, y, weights) -> (means, metrics)`` on each device's rows, then combine.

    Each device computes means over its own real samples; one all-reduce then
    weights them by sample count (``count/`` metrics are summed). Explicit,
    because left to itself XLA's partitioner reduced the recurrent weights'
    gradient across devices inside the backward time loop, once per step of T.
    """
    def on_device(params, x, y, weights):
        means, metrics = fn(params, x, y, weights)
        count = jnp.sum(weights)
        share = count / jnp.maximum(jax.lax.psum(count, DATA_AXIS), 1.0)
        means = jax.tree.map(lambda m: m * share, means)
        metrics = {k: v if k.startswith("count/") else v * share for k, v in metrics.items()}
        # One all-reduce of everything, flattened: across processes each
        # collective costs a network round trip.
        flat, unflatten = ravel_pytree((means, metrics))
        return unflatten(jax.lax.psum(flat, DATA_AXIS))

    data, whole = PartitionSpec(DATA_AXIS), PartitionSpec()
    # check_vma off: the time loop starts from zeros that do not vary by device while its
    # carry does; the psums above make every output the same on all devices.
    return jax.shard_map(on_device, mesh=layout.mesh, in_specs=(whole, data, data, data), out_specs=(whole, whole),
                         check_vma=False)


def make_train_step(spec: NetworkSpec, optimizer, schedule, layout: Layout, nan_steps: tuple[int, ...] = ()):
    """``train_step(state, x, y, weights) -> (state, metrics)``; ``state`` is donated."""
    grads_fn = _per_device(lambda p, x, y, w: compute_grads(p, x, y, w, spec), layout)

    def train_step(state: TrainState, x, y, weights):
        grads, metrics = grads_fn(state.params, x, y, weights)
        state, update_metrics = apply_grads(state, grads, metrics["train/loss"], optimizer, schedule, nan_steps)
        return state, {**metrics, **update_metrics}

    r, b = layout.replicated, layout.batch
    return jax.jit(train_step, in_shardings=(r, b, b, b), out_shardings=(r, r), donate_argnums=0)


def make_grad_step(spec: NetworkSpec, layout: Layout):
    """``grad_step(params, x, y, weights) -> (grads, metrics)``: the first half of a step."""
    r, b = layout.replicated, layout.batch
    return jax.jit(_per_device(lambda p, x, y, w: compute_grads(p, x, y, w, spec), layout),
                   in_shardings=(r, b, b, b), out_shardings=(r, r))


def make_apply_step(optimizer, schedule, layout: Layout, nan_steps: tuple[int, ...] = ()):
    """``apply_step(state, grads, loss) -> (state, metrics)``: the second half; ``state`` is donated."""
    r = layout.replicated
    return jax.jit(lambda s, g, l: apply_grads(s, g, l, optimizer, schedule, nan_steps),
                   in_shardings=(r, r, r), out_shardings=(r, r), donate_argnums=0)


def make_eval_step(spec: NetworkSpec, layout: Layout):
    """``eval_step(params, x, y, weights) -> metrics`` (names under ``eval/``)."""
    r, b = layout.replicated, layout.batch
    metrics_fn = _per_device(lambda p, x, y, w: ({}, eval_metrics(p, x, y, w, spec)), layout)
    return jax.jit(lambda p, x, y, w: metrics_fn(p, x, y, w)[1], in_shardings=(r, b, b, b), out_shardings=r)


def to_host(tree):
    """Replicated (possibly multi-process) arrays -> numpy, from this process's copy."""
    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return np.asarray(a.addressable_data(0))
        return np.asarray(a)
    return jax.tree.map(one, tree)
