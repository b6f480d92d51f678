"""The train and eval steps: jitted pure functions over one ``TrainState``.

A step is ``compute_grads`` (forward + BPTT on a batch or shard) followed by
``apply_grads`` (optax update). The single-process trainer jits the two
together; distributed workers call them through the same functions, either
with a mean gradient in between (coordinator sync) or over a global mesh
(XLA sync).

Metric names are the ones logged. Keys under ``count/`` are sums over the
batch (added across shards); all others are batch means (averaged across
shards weighted by shard size). ``summarize`` turns counts into fractions.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from snndist.network import NetworkSpec, loss_fn

Metrics = dict[str, Any]


class TrainState(NamedTuple):
    step: jax.Array  # int32: steps taken, skipped ones included
    params: dict
    opt_state: Any
    skipped: jax.Array  # int32: steps skipped for a non-finite loss or gradient


def init_state(params: dict, optimizer: optax.GradientTransformation) -> TrainState:
    # Two buffers, not one: the jitted step donates the state, and XLA refuses
    # to donate the same buffer twice.
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), jnp.zeros((), jnp.int32))


def compute_grads(params: dict, x: jax.Array, y: jax.Array, spec: NetworkSpec) -> tuple[dict, Metrics]:
    """Mean loss gradient over the batch, and the batch's metrics."""
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y, spec)
    metrics = {"train/loss": loss, "train/cross_entropy": aux.cross_entropy, "train/accuracy": aux.accuracy}
    for name, rate, counts in zip(spec.names, aux.rate_hz, aux.neuron_spikes):
        metrics[f"spikes/rate_hz/{name}"] = rate
        metrics[f"count/neuron_spikes/{name}"] = counts
    return grads, metrics


def apply_grads(state: TrainState, grads: dict, loss: jax.Array,
                optimizer: optax.GradientTransformation, schedule: optax.Schedule) -> tuple[TrainState, Metrics]:
    """One optax update; skipped (state unchanged but ``step``) if anything is non-finite."""
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


def make_train_step(spec: NetworkSpec, optimizer: optax.GradientTransformation, schedule: optax.Schedule):
    """``train_step(state, x, y) -> (state, metrics)``, jitted; ``state`` is donated."""

    def train_step(state: TrainState, x: jax.Array, y: jax.Array):
        grads, metrics = compute_grads(state.params, x, y, spec)
        state, update_metrics = apply_grads(state, grads, metrics["train/loss"], optimizer, schedule)
        return state, {**metrics, **update_metrics}

    return jax.jit(train_step, donate_argnums=0)


def make_eval_step(spec: NetworkSpec):
    """``eval_step(params, x, y) -> metrics`` (names under ``eval/``), jitted."""

    def eval_step(params: dict, x: jax.Array, y: jax.Array) -> Metrics:
        loss, aux = loss_fn(params, x, y, spec)
        metrics = {"eval/loss": loss, "eval/cross_entropy": aux.cross_entropy, "eval/accuracy": aux.accuracy}
        for name, rate, counts in zip(spec.names, aux.rate_hz, aux.neuron_spikes):
            metrics[f"eval/rate_hz/{name}"] = rate
            metrics[f"count/neuron_spikes/{name}"] = counts
        return metrics

    return jax.jit(eval_step)


def summarize(metrics: Metrics, prefix: str = "spikes") -> dict[str, float]:
    """Host floats; ``count/neuron_spikes/L`` becomes ``<prefix>/silent_fraction/L``."""
    out = {}
    for key, value in metrics.items():
        if key.startswith("count/neuron_spikes/"):
            layer = key.rsplit("/", 1)[1]
            out[f"{prefix}/silent_fraction/{layer}"] = float((jnp.asarray(value) == 0).mean())
        elif key != "train/step_skipped":
            out[key] = float(value)
    return out


def weighted_mean(shard_metrics: list[Metrics], sizes: list[int]) -> Metrics:
    """Combine per-shard metrics: counts add up, means are weighted by shard size."""
    total = float(sum(sizes))
    out = {}
    for key in shard_metrics[0]:
        values = [m[key] for m in shard_metrics]
        if key.startswith("count/"):
            out[key] = sum(values)
        else:
            out[key] = sum(v * (n / total) for v, n in zip(values, sizes))
    return out
