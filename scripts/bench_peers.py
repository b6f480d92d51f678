"""snndist's train step against the same network in the peer SNN libraries, on this machine.

    python scripts/bench_peers.py                                # tutorial and shd, 3 rounds
    python scripts/bench_peers.py --configs shd --rounds 1 --steps 3
    python scripts/bench_peers.py --encodings dense,events       # time both snndist input paths
    python scripts/bench_peers.py --peers spyx --steps 5         # snndist against one peer
    python scripts/bench_peers.py --write BENCHMARKS.md          # also record the tables there

The peers come from the optional extra ``pip install -e '.[bench]'``:

    brainstate   the seed tutorial's stack: brainstate, brainpy, braintools, brainunit
    spyx         spyx 1.0 (Flax NNX), with flax and optax
    snntorch     snnTorch 1.0 on CPU torch

A peer that is not importable is skipped with a note. Each library builds
the seed's network (``configs/tutorial.yaml``: 100 inputs -> 4 LIF -> 2
classes, T=200; ``configs/bench_shd.yaml``: 700 -> 256 recurrent LIF -> 20,
T=100; batch 256, Adam 3e-3 for both) from the same numpy-drawn initial
weights and spikes; its losses at step 0 and after two updates are printed
next to snndist's, with what could not be made identical. Each step
(forward, BPTT, Adam) is timed with its batch already on the device and
waited for. The libraries take turns in rounds, a block of ``--steps`` steps
each (cut short after ``--block-s`` seconds), each round starting with the
next library, because a machine's speed
drifts by tens of percent within minutes; the ratios within one run are the
figures to read. The dense-matmul floor is
the step's matrix-product FLOPs (``snndist.model.flops``) at the float32
matmul rate measured once per round in the same run.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from snndist.config import Config, load_config
from snndist.data.datasets import make_dataset
from snndist.data.events import capacity_of, to_events
from snndist.data.loader import choose_encoding
from snndist.huge_pages import restart_with_huge_pages
from snndist.model.flops import train_step_flops
from snndist.model.network import NetworkSpec, forward
from snndist.run.bench import matmul_rate
from snndist.train.optim import make_optimizer
from snndist.train.spec import network_spec
from snndist.train.step import Layout, init_state, make_train_step

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"tutorial": ROOT / "configs/tutorial.yaml", "shd": ROOT / "configs/bench_shd.yaml"}
# Both shapes train at the seed's rate here (bench_shd.yaml's own is 1e-3), as the peer comparison did.
OVERRIDES = ("train.lr=0.003", "train.b1=0.9", "train.b2=0.999", "train.global_batch=256")
PARAM_SEED, DATA_SEED = 1, 0
WARMUP = 2  # untimed steps after the first; their losses check that the libraries train alike
# Library -> the pip packages its benchmark needs, for the note when one is missing.
PEER_PACKAGES = {"brainstate": "brainstate brainpy braintools brainunit", "spyx": "spyx flax optax",
                 "snntorch": "snntorch torch (its CPU wheel)"}
VERSIONED = ("jax", "jaxlib", "optax", "snndist", "brainstate", "brainpy", "braintools", "brainunit", "spyx",
             "flax", "torch", "snntorch")


# ------------------------------------------------------------------------ the problem
@dataclasses.dataclass(frozen=True)
class Problem:
    """One config's network and the numbers every library starts from."""

    name: str
    cfg: Config
    spec: NetworkSpec
    params: dict  # numpy, snndist's layout: {"hidden0": {"w", "b", ["v"]}, "readout": {"w", "b"}}
    x: np.ndarray  # [batch, T, n_in] bool
    y: np.ndarray  # [batch] int32

    @property
    def sizes(self) -> tuple[int, int, int]:
        return self.spec.num_inputs, self.spec.layers[0].size, self.spec.num_classes

    @property
    def recurrent(self) -> bool:
        return self.spec.layers[0].recurrent

    @property
    def time_major(self) -> np.ndarray:
        """``x`` as ``[T, batch, n_in]`` float32, the peers' input layout."""
        return np.ascontiguousarray(self.x.transpose(1, 0, 2), np.float32)

    def describe(self) -> str:
        n_in, n, classes = self.sizes
        kind = "recurrent " if self.recurrent else ""
        return (f"{self.name}: {n_in} inputs -> {n} {kind}LIF -> {classes} classes, T={self.spec.timesteps}, "
                f"batch {len(self.y)}, input density {input_density(self.cfg):g}, Adam lr {self.cfg.train.lr:g}")


def load_problem(name: str, overrides: tuple[str, ...] = ()) -> Problem:
    """``name``'s config (``CONFIGS``) with the comparison's ``OVERRIDES``, then ``overrides``."""
    cfg = load_config(CONFIGS[name], OVERRIDES + tuple(overrides))
    spec = network_spec(cfg)
    check_seed_network(cfg, spec)
    rng, batch, d = np.random.default_rng(DATA_SEED), cfg.train.global_batch, cfg.data
    x = rng.random((batch, d.timesteps, d.num_inputs)) < input_density(cfg)
    y = rng.integers(0, d.num_classes, batch).astype(np.int32)
    return Problem(name, cfg, spec, draw_params(spec, PARAM_SEED), x, y)


def input_density(cfg: Config) -> float:
    """The chance that an input spikes in a step: the synthetic task's rate times dt."""
    return cfg.data.rate_hz * cfg.data.dt_ms / 1000.0


def check_seed_network(cfg: Config, spec: NetworkSpec) -> None:
    """The peers' models below are written for the seed's neuron; refuse a config they would not match."""
    layer = cfg.model.layers[0]
    seed_like = (len(cfg.model.layers) == 1 and layer.threshold == 1.0 and layer.v_reset == 0.0
                 and layer.v_rest == 0.0 and layer.resistance == 1.0 and layer.reset == "soft"
                 and cfg.model.surrogate == "relu" and not cfg.model.surrogate_params
                 and cfg.model.readout.reduce == "mean" and layer.rate_reg.strength == 0
                 and cfg.train.optimizer == "adam" and cfg.train.lr_schedule == "constant"
                 and cfg.train.grad_clip == 0 and cfg.train.warmup_steps == 0)
    if not seed_like:
        raise SystemExit(f"{spec}: the peers here implement only the seed's one-layer soft-reset LIF network")


def truncated_normal(rng: np.random.Generator, shape: tuple[int, int], variance: float) -> np.ndarray:
    """Normal truncated at two standard deviations, scaled to ``variance``: snndist's (and the seed's) init."""
    z = rng.standard_normal(shape)
    while (outside := np.abs(z) > 2.0).any():
        z[outside] = rng.standard_normal(int(outside.sum()))
    return (z * math.sqrt(variance) / 0.8796256610342398).astype(np.float32)  # std of N(0,1) cut at +-2


def draw_params(spec: NetworkSpec, seed: int) -> dict:
    """Initial weights with the variances snndist's config gives, biases 0."""
    rng = np.random.default_rng(seed)
    layer = spec.layers[0]
    n_in, n, classes = spec.num_inputs, layer.size, spec.num_classes
    hidden = {"w": truncated_normal(rng, (n_in, n), layer.init.scale / n_in), "b": np.zeros(n, np.float32)}
    if layer.recurrent:
        hidden["v"] = truncated_normal(rng, (n, n), layer.rec_init.scale / n)
    readout = {"w": truncated_normal(rng, (n, classes), spec.readout_init.scale / n),
               "b": np.zeros(classes, np.float32)}
    return {"hidden0": hidden, "readout": readout}


class Decays(NamedTuple):
    syn: float  # exp(-dt / tau_syn)
    mem: float  # exp(-dt / tau_mem)
    out: float  # exp(-dt / tau_readout)


def decays(problem: Problem) -> Decays:
    lif = problem.spec.layers[0].lif
    return Decays(lif.syn_decay, lif.mem_decay, problem.spec.readout_decay)


# ------------------------------------------------------------------------ contenders
class Contender(NamedTuple):
    """One library's train step on one problem. ``step()`` trains once, waits, returns the loss."""

    label: str
    step: Callable[[], object]
    deviation: str  # how its model differs from snndist's; "" if it does not


def snndist_contender(problem: Problem, encoding: str, spike_products: str) -> Contender:
    """snndist's jitted train step (the one training runs), on one device; ``encoding``: auto, dense, events;
    ``spike_products``: train.spike_products (auto, f32, int8)."""
    cfg = dataclasses.replace(problem.cfg, train=dataclasses.replace(problem.cfg.train, spike_products=spike_products))
    spec = network_spec(cfg)
    optimizer, schedule = make_optimizer(cfg.train)
    layout = Layout.over(jax.local_devices()[:1])
    train_step = make_train_step(spec, optimizer, schedule, layout)
    # The encoding snndist's loader picks for this data (``auto``), or the one asked for.
    data_cfg = dataclasses.replace(cfg.data, encoding=encoding)
    chosen, _ = choose_encoding(data_cfg, make_dataset(data_cfg, "train", cfg.train.seed), spec.layers[0])
    # The capacity training would give these samples: their largest one's events (synthetic data's rule).
    x = to_events(problem.x, capacity_of(problem.x)) if chosen == "events" else problem.x
    x = jax.tree.map(lambda a: jax.device_put(a, layout.batch), x)
    y = jax.device_put(problem.y, layout.batch)
    weights = jax.device_put(np.ones(len(problem.y), np.float32), layout.batch)
    params = jax.device_put(problem.params, layout.replicated)
    state = [jax.device_put(init_state(params, optimizer), layout.replicated)]

    def step():
        state[0], metrics = train_step(state[0], x, y, weights)  # the state is donated: keep the new one
        return jax.block_until_ready(metrics["train/loss"])  # the update runs in the same program

    # int8 where the layer has a product with a side of spikes: the recurrence, or the dense input's
    products = "int8" if spec.layers[0].lif.int8_spikes and (problem.recurrent or chosen == "dense") else "f32"
    return Contender(f"snndist ({chosen} input, {products} spike products)", step, "")


def brainstate_contenders(problem: Problem) -> list[Contender]:
    """The seed tutorial's brainstate/brainpy model and train function (``shared/reference/seed_tutorial.py``).

    Recurrent, two ways to write it: ``split`` adds a separate recurrent Linear
    on the LIF's last spikes; ``concat`` feeds ``[x_t, last spikes]`` to one
    Linear, the idiom of the library's own recurrent examples, whose backward
    pass also computes the gradient to the input columns.
    """
    import brainpy
    import brainstate
    import braintools
    import brainunit as u

    brainstate.environ.set(dt=problem.cfg.data.dt_ms * u.ms)
    _, n, classes = problem.sizes
    layer, k = problem.cfg.model.layers[0], decays(problem)
    tau_out = -problem.cfg.data.dt_ms / math.log(k.out)
    hidden, readout = problem.params["hidden0"], problem.params["readout"]

    class SNN(brainstate.nn.Module):
        def __init__(self, variant: str):
            super().__init__()
            self.variant = variant
            w_in = hidden["w"] if variant != "concat" else np.concatenate([hidden["w"], hidden["v"]])
            self.i2r = brainstate.nn.Linear(w_in.shape[0], n, w_init=jnp.asarray(w_in) * u.mA,
                                            b_init=jnp.asarray(hidden["b"]) * u.mA)
            self.r2r = None
            if variant == "split":
                self.r2r = brainstate.nn.Linear(n, n, w_init=jnp.asarray(hidden["v"]) * u.mA, b_init=None)
            self.syn = brainpy.state.Expon(n, tau=layer.tau_syn_ms * u.ms,
                                           g_initializer=brainstate.nn.init.Constant(0. * u.mA))
            self.r = brainpy.state.LIF(n, tau=layer.tau_mem_ms * u.ms, V_reset=0. * u.mV, V_rest=0. * u.mV,
                                       V_th=1. * u.mV, spk_fun=braintools.surrogate.ReluGrad())
            self.r2o = brainstate.nn.Linear(n, classes, w_init=jnp.asarray(readout["w"]),
                                            b_init=jnp.asarray(readout["b"]))
            self.o = brainpy.state.Expon(classes, tau=tau_out * u.ms, g_initializer=brainstate.nn.init.Constant(0.))

        def update(self, spikes):
            if self.variant == "concat":
                current = self.i2r(u.math.concatenate([spikes, self.r.get_spike()], axis=-1))
            elif self.variant == "split":
                current = self.i2r(spikes) + self.r2r(self.r.get_spike())  # get_spike(): the last step's
            else:
                current = self.i2r(spikes)
            return self.o(self.r2o(self.r(self.syn(current))))

    x, y = jnp.asarray(problem.time_major), jnp.asarray(problem.y)
    contenders = []
    for variant in ("split", "concat") if problem.recurrent else ("plain",):
        label = "brainstate" + (f" ({variant} recurrence)" if problem.recurrent else "")
        contenders.append(Contender(label, brainstate_step(SNN(variant), problem.cfg.train.lr, x, y), ""))
    return contenders


def brainstate_step(net, lr: float, x, y) -> Callable[[], object]:
    """The seed tutorial's train function for ``net``: states reset, BPTT, Adam, all in one jit."""
    import brainstate
    import braintools
    import brainunit as u

    params = net.states(brainstate.ParamState)
    optimizer = braintools.optim.Adam(lr=lr, beta1=0.9, beta2=0.999)
    optimizer.register_trainable_weights(params)

    def loss_fn(x, y):
        mean_readout = u.math.mean(brainstate.transform.for_loop(net.update, x), axis=0)
        return braintools.metric.softmax_cross_entropy_with_integer_labels(mean_readout, y).mean()

    @brainstate.transform.jit
    def train_fn(x, y):
        brainstate.nn.init_all_states(net, batch_size=y.shape[0])
        grads, loss = brainstate.transform.grad(loss_fn, params, return_value=True)(x, y)
        optimizer.update(grads)
        return loss

    return lambda: jax.block_until_ready(train_fn(x, y))


def spyx_contender(problem: Problem) -> Contender:
    """spyx 1.0's idiom: ``spyx.nn.Sequential`` of nnx.Linear and spyx neurons, ``spyx.nn.run`` over time,
    ``spyx.optimize.make_train_step``.

    spyx's (R)CuBaLIF integrates ``V <- b V + I`` where the seed has
    ``(1 - b) I``: the input-side weights are loaded times ``(1 - b)`` (the
    same forward pass) and Adam's steps on them are scaled by ``(1 - b)``, so
    that the trajectory in the seed's weights is the same too (Adam's step
    does not depend on the gradient's scale). Its decays, trainable by
    default, are held fixed as the seed's are.
    """
    import spyx
    import spyx.nn as snn
    from flax import nnx

    n_in, n, classes = problem.sizes
    k = decays(problem)
    gain = 1.0 - k.mem
    surrogate = spyx.axn.custom(bwd=lambda v: 0.3 * jnp.maximum(0.0, 1.0 - jnp.abs(v)),
                                fwd=lambda v: (v >= 0).astype(v.dtype))  # the seed's H(0) = 1; spyx's is 0

    class FixedDecay(nnx.Variable):
        """Not an ``nnx.Param``: nnx.Optimizer and nnx.grad leave it alone."""

    rngs = nnx.Rngs(0)
    neuron = (snn.RCuBaLIF if problem.recurrent else snn.CuBaLIF)(
        (n,), alpha=k.syn, beta=k.mem, threshold=1.0, activation=surrogate, rngs=rngs)
    model = snn.Sequential(nnx.Linear(n_in, n, rngs=rngs), neuron, nnx.Linear(n, classes, rngs=rngs),
                           snn.LI((classes,), beta=k.out, rngs=rngs))
    linear_in, _, linear_out, out = model.layers
    hidden, readout = problem.params["hidden0"], problem.params["readout"]
    linear_in.kernel[...] = jnp.asarray(hidden["w"] * gain)
    linear_in.bias[...] = jnp.asarray(hidden["b"] * gain)
    if problem.recurrent:
        neuron.recurrent_w[...] = jnp.asarray(hidden["v"] * gain)
    linear_out.kernel[...] = jnp.asarray(readout["w"])
    linear_out.bias[...] = jnp.asarray(readout["b"])
    neuron.alpha, neuron.beta, out.beta = (FixedDecay(v[...]) for v in (neuron.alpha, neuron.beta, out.beta))

    def loss_fn(model, x, y):
        traces, _ = snn.run(model, x)  # time-major [T, batch, classes]
        return optax.softmax_cross_entropy_with_integer_labels(traces.mean(axis=0), y).mean()

    input_side = lambda path: "['layers'][0]" in path or "recurrent_w" in path
    adam = optax.chain(optax.adam(problem.cfg.train.lr, b1=0.9, b2=0.999),
                       scale_where(input_side, gain))
    optimizer = nnx.Optimizer(model, adam, wrt=nnx.Param)
    train_step = spyx.optimize.make_train_step(loss_fn)
    x, y = jnp.asarray(problem.time_major), jnp.asarray(problem.y)
    deviation = ("its neuron emits the spike of the voltage before the step's update, so the readout integrates "
                 "the hidden spikes one step later (s_{t-1} for s_t); the hidden layer is the same")
    return Contender("spyx", lambda: jax.block_until_ready(train_step(model, optimizer, x, y)), deviation)


def scale_where(selected: Callable[[str], bool], factor: float) -> optax.GradientTransformation:
    """An optax transform multiplying the updates of the leaves whose path ``selected`` picks by ``factor``."""
    def update(updates, state, params=None):
        scaled = jax.tree_util.tree_map_with_path(
            lambda path, g: g * factor if selected(jax.tree_util.keystr(path)) else g, updates)
        return scaled, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def snntorch_contender(problem: Problem) -> Contender:
    """snnTorch's idiom (its tutorials): an nn.Module looping over time in Python, nn.Linear and snn neurons,
    eager torch.optim.Adam.

    ``snn.Synaptic`` integrates ``mem <- b mem + syn`` without the seed's
    ``(1 - b)``: loaded and trained as for spyx (input-side weights times
    ``(1 - b)``, their Adam steps scaled alike). ``reset_delay=False`` makes
    its subtractive reset the seed's (subtracted before the leak, gradient
    through the spike). The recurrence is a separate bias-free nn.Linear on
    the last step's spikes into the synaptic input, as in the seed, rather
    than ``snn.RSynaptic``, whose reset is applied after the leak and
    detached, and whose recurrent Linear has a bias.
    """
    import snntorch
    import torch

    torch.set_num_threads(os.cpu_count() or 1)  # XLA uses every core too
    n_in, n, classes = problem.sizes
    k = decays(problem)
    gain = 1.0 - k.mem

    def relu_grad(v, grad, spikes):
        return grad * torch.clamp(0.3 * (1.0 - torch.abs(v)), min=0.0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc_in = torch.nn.Linear(n_in, n)
            self.fc_rec = torch.nn.Linear(n, n, bias=False) if problem.recurrent else None
            self.lif = snntorch.Synaptic(alpha=k.syn, beta=k.mem, threshold=1.0, reset_mechanism="subtract",
                                         reset_delay=False,
                                         spike_grad=snntorch.surrogate.custom_surrogate(relu_grad))
            self.fc_out = torch.nn.Linear(n, classes)
            self.out = snntorch.Leaky(beta=k.out, reset_mechanism="none")

        def forward(self, x):
            syn, mem = self.lif.reset_mem()
            out = self.out.reset_mem()
            spikes = torch.zeros(x.shape[1], n)
            trace = []
            for x_t in x:
                current = self.fc_in(x_t)
                if self.fc_rec is not None:
                    current = current + self.fc_rec(spikes)
                spikes, syn, mem = self.lif(current, syn, mem)
                _, out = self.out(self.fc_out(spikes), out)
                trace.append(out)
            return torch.stack(trace)  # [T, batch, classes]

    net = Net()
    hidden, readout = problem.params["hidden0"], problem.params["readout"]
    with torch.no_grad():  # torch stores Linear weights [out, in]
        net.fc_in.weight.copy_(torch.from_numpy(hidden["w"].T * gain))
        net.fc_in.bias.copy_(torch.from_numpy(hidden["b"] * gain))
        if problem.recurrent:
            net.fc_rec.weight.copy_(torch.from_numpy(hidden["v"].T * gain))
        net.fc_out.weight.copy_(torch.from_numpy(readout["w"].T))
        net.fc_out.bias.copy_(torch.from_numpy(readout["b"]))
    input_side = [p for m in (net.fc_in, net.fc_rec) if m is not None for p in m.parameters()]
    lr = problem.cfg.train.lr
    optimizer = torch.optim.Adam([{"params": input_side, "lr": lr * gain},
                                  {"params": list(net.fc_out.parameters()), "lr": lr}], betas=(0.9, 0.999))
    x, y = torch.from_numpy(problem.time_major), torch.from_numpy(problem.y).long()

    def step():
        loss = torch.nn.functional.cross_entropy(net(x).mean(dim=0), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.detach()  # eager on CPU: already computed

    return Contender(f"snnTorch (CPU torch, {torch.get_num_threads()} threads)", step,
                     "H(0) = 0 where the seed's is 1 (a voltage exactly at threshold); where a voltage is still at or "
                     "above threshold after its reset (U >= 2 theta), its next firing test subtracts the threshold "
                     "once more")


PEERS = {"brainstate": brainstate_contenders, "spyx": lambda p: [spyx_contender(p)],
         "snntorch": lambda p: [snntorch_contender(p)]}


def peer_contenders(problem: Problem, names: list[str], skipped: list[str]) -> list[Contender]:
    contenders = []
    for name in names:
        build = PEERS[name]
        try:
            contenders += build(problem)
        except ImportError as err:
            note = f"{name}: skipped, not importable ({err}); pip install {PEER_PACKAGES[name]}"
            if note not in skipped:
                skipped.append(note)
    return contenders


# ------------------------------------------------------------------------ loss check
def readout_loss(spikes: np.ndarray, params: dict, decay: float, y: np.ndarray, delay: int = 0) -> float:
    """Cross-entropy of the time-mean leaky readout of hidden ``spikes [T, batch, n]`` (shifted by ``delay``
    steps: what a model whose neurons emit late computes), in float64."""
    spikes = np.asarray(spikes, np.float64)
    if delay:
        spikes = np.concatenate([np.zeros_like(spikes[:delay]), spikes[:-delay]])
    drive = spikes @ params["readout"]["w"].astype(np.float64) + params["readout"]["b"]
    out, total = np.zeros_like(drive[0]), np.zeros_like(drive[0])
    for d in drive:
        out = decay * out + d
        total += out
    logits = total / len(drive)
    logits -= logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean())


def spyx_expected_loss(problem: Problem) -> float:
    """snndist's own forward pass with the readout fed the hidden spikes one step late, as spyx's neuron does."""
    trace = forward(jax.tree.map(jnp.asarray, problem.params), jnp.asarray(problem.x), problem.spec)
    return readout_loss(trace.spikes[-1], problem.params, problem.spec.readout_decay, problem.y, delay=1)


# ------------------------------------------------------------------------ timing
class Timing(NamedTuple):
    ms: dict[str, list[list[float]]]  # label -> per round, each step's ms
    losses: dict[str, list[float]]  # label -> the losses of the untimed first steps, from the initial weights
    compile_s: dict[str, float]  # label -> the first step's time (compilation, for the JAX libraries)
    matmul_rates: list[float]  # FLOP/s, one per round


def run_rounds(contenders: list[Contender], rounds: int, steps: int, block_s: float,
               warmup: int = WARMUP) -> Timing:
    """The first step of each (compiles), ``warmup`` more, then ``rounds`` rounds: a block of timed steps
    for each contender in turn, each round starting one further along, and the matmul rate once."""
    losses, compile_s = {}, {}
    for c in contenders:
        began = time.perf_counter()
        losses[c.label] = [float(c.step())]
        compile_s[c.label] = time.perf_counter() - began
        losses[c.label] += [float(c.step()) for _ in range(warmup)]
    ms = {c.label: [] for c in contenders}
    rates = []
    for r in range(rounds):
        # Each round starts with the next library: the first block after the compiles ran slower (snndist's,
        # first every round: 207-332 ms where its later rounds took 184-214).
        for c in contenders[r % len(contenders):] + contenders[:r % len(contenders)]:
            ms[c.label].append(time_block(c.step, steps, block_s))
        rates.append(matmul_rate())
        say(f"  round {r + 1}/{rounds}: " + ", ".join(f"{label} {statistics.median(b[-1]):.1f}"
                                                       for label, b in ms.items()) + " ms/step")
    return Timing(ms, losses, compile_s, rates)


def time_block(step: Callable[[], object], steps: int, block_s: float, at_least: int = 3) -> list[float]:
    """ms of each of ``steps`` steps, fewer (but ``at_least``) once the block has run ``block_s`` seconds:
    eager torch can be a hundred times slower than the rest on a busy machine, and a run should stay short."""
    times: list[float] = []
    while len(times) < steps and (len(times) < at_least or sum(times) < 1000.0 * block_s):
        began = time.perf_counter()
        step()
        times.append(1000.0 * (time.perf_counter() - began))
    return times


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------ report
def table(problem: Problem, contenders: list[Contender], timing: Timing, spyx_expected: float | None) -> str:
    """One config's markdown: libraries, the floor, the loss check, the deviations."""
    pooled = {label: [t for block in blocks for t in block] for label, blocks in timing.ms.items()}
    median = {label: statistics.median(times) for label, times in pooled.items()}
    ours = contenders[0].label  # the reference: snndist as --encodings and --spike-products first name it
    flops = sum(train_step_flops(problem.spec, len(problem.y)).values())
    rate = statistics.median(timing.matmul_rates)
    floor_ms = 1000.0 * flops / rate
    base = timing.losses[ours]
    lines = [f"### {problem.describe()}", "",
             row("library", "ms/step (median)", "round medians", "time / snndist's", "steps timed",
                 "first step s", "step-0 loss", "loss - snndist's: step 0", f"step {WARMUP}"),
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for c in contenders:
        losses = timing.losses[c.label]
        deltas = ("", "") if c.label == ours else (f"{losses[0] - base[0]:+.1e}", f"{losses[-1] - base[-1]:+.1e}")
        lines.append(row(c.label, f"{median[c.label]:.1f}",
                         " / ".join(f"{statistics.median(b):.1f}" for b in timing.ms[c.label]),
                         f"{median[c.label] / median[ours]:.2f}", len(pooled[c.label]),
                         f"{timing.compile_s[c.label]:.2f}", f"{losses[0]:.6f}", *deltas))
    lines.append(row(f"dense-matmul floor: {flops / 1e9:.2f} GFLOP at {rate / 1e9:.1f} GFLOP/s", f"{floor_ms:.1f}",
                     "", f"{floor_ms / median[ours]:.2f}", "", "", "", "", ""))
    rates = ", ".join(f"{r / 1e9:.1f}" for r in timing.matmul_rates)
    lines += ["", (f"{ours}: **{median[ours] / floor_ms:.2f}x the dense-matmul floor** "
                  f"(float32 matmul rate per round: {rates} GFLOP/s).")]
    if spyx_expected is not None and "spyx" in timing.losses:
        lines.append(f"spyx's step-0 loss against snndist's forward pass with the readout one step late "
                     f"({spyx_expected:.6f}): {timing.losses['spyx'][0] - spyx_expected:+.1e}.")
    deviations = [f"- {c.label}: {c.deviation}" for c in contenders if c.deviation]
    if deviations:
        lines += ["", "Where a model cannot be made the seed's:", *deviations]
    return "\n".join(lines)


def row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def header(args: argparse.Namespace) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    versions = ", ".join(f"{name} {v}" for name in VERSIONED if (v := version(name)))
    machine = f"{cpu_model()}, {os.cpu_count()} cores, {jax.devices()[0].platform}; python {platform.python_version()}"
    return "\n".join([
        "## Peer libraries: `python scripts/bench_peers.py`", "",
        f"- date: {now}; machine: {machine}",
        f"- versions: {versions}",
        f"- command: `{command(args)}`",
        f"- XLA_FLAGS (the same for every library: one process, one XLA): `{os.environ.get('XLA_FLAGS', '')}`; "
        f"GLIBC_TUNABLES (snndist's huge pages, the same for every library): "
        f"`{os.environ.get('GLIBC_TUNABLES', '')}`",
        (f"- ms/step: one full train step (forward, BPTT, Adam), its batch on the device, waited for; median over "
        f"{args.rounds} interleaved rounds of up to {args.steps} steps per library (a block stops after "
        f"{args.block_s:g} s). Identical initial weights and input spikes in every library; the step-0 loss "
        f"checks that each computes the same network, the step-{WARMUP} loss that each trains alike."),
    ])


def command(args: argparse.Namespace) -> str:
    """The command line that repeats this run (without ``--write``)."""
    line = (f"python scripts/bench_peers.py --configs {args.configs} --rounds {args.rounds} --steps {args.steps} "
            f"--block-s {args.block_s:g}")
    line += f" --encodings {args.encodings}" if args.encodings != "auto" else ""
    line += f" --spike-products {args.spike_products}" if args.spike_products != "auto" else ""
    return line + (f" --peers {args.peers}" if args.peers != ",".join(PEERS) else "")


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else platform.machine()


def write_section(path: Path, body: str, name: str = "bench_peers") -> None:
    """Put ``body`` between the markers ``<!-- name -->`` and ``<!-- /name -->`` in ``path``: replacing the
    marked section there, else appending it; says so."""
    begin, end_mark = f"<!-- {name} -->", f"<!-- /{name} -->"
    section = f"{begin}\n{body}\n{end_mark}"
    text = path.read_text() if path.exists() else ""
    start, end = text.find(begin), text.find(end_mark)
    if start >= 0 and end > start:
        text = text[:start] + section + text[end + len(end_mark):]
    else:
        text = text.rstrip("\n") + ("\n\n" if text.strip() else "") + section + "\n"
    path.write_text(text)
    say(f"wrote {name}'s tables to {path}")


# ------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tutorial,shd", help="comma-separated: " + ", ".join(CONFIGS))
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per library per round")
    parser.add_argument("--block-s", type=float, default=30.0,
                        help="a library's block in a round stops after this many seconds (but 3 steps)")
    parser.add_argument("--encodings", default="auto",
                        help="snndist input paths to time, comma-separated: auto (the loader's choice), dense, events")
    parser.add_argument("--spike-products", default="auto",
                        help="snndist's train.spike_products to time, comma-separated: auto, f32, int8")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated: " + ", ".join(PEERS))
    parser.add_argument("--write", metavar="FILE", help="also write the tables between markers in FILE")
    args = parser.parse_args()
    restart_with_huge_pages()  # as the snndist command runs; every library here shares the process
    names = args.configs.split(",")
    peers = [p for p in args.peers.split(",") if p]
    if unknown := set(names) - set(CONFIGS):
        parser.error(f"unknown config(s) {', '.join(sorted(unknown))}; known: {', '.join(CONFIGS)}")
    if unknown := set(peers) - set(PEERS):
        parser.error(f"unknown peer(s) {', '.join(sorted(unknown))}; known: {', '.join(PEERS)}")

    skipped: list[str] = []
    sections = [header(args)]
    print(sections[0] + "\n", flush=True)
    for name in names:
        problem = load_problem(name)
        say(f"{problem.describe()}: building and compiling")
        ours = [snndist_contender(problem, e, p) for e in args.encodings.split(",")
                for p in args.spike_products.split(",")]
        contenders = list({c.label: c for c in ours}.values()) + peer_contenders(problem, peers, skipped)
        timing = run_rounds(contenders, args.rounds, args.steps, args.block_s)
        spyx_expected = spyx_expected_loss(problem) if "spyx" in timing.losses else None
        sections.append(table(problem, contenders, timing, spyx_expected))
        print(sections[-1] + "\n", flush=True)
    if skipped:
        sections.append("\n".join(f"- {note}" for note in skipped))
        print("\n".join(skipped))
    if args.write:
        write_section(Path(args.write), "\n\n".join(sections))


if __name__ == "__main__":
    main()
