"""Time the train step (forward + BPTT + Adam) against the seed's library.

    python scripts/bench_core.py                      # tutorial and SHD-scale configs
    python scripts/bench_core.py --configs tutorial --rounds 7 --steps 100

For each config it times snndist's jitted step and, when brainstate/brainpy
(the seed tutorial's libraries) are importable, the seed's model built the
way ``shared/reference/seed_tutorial.py`` builds it, on the same shapes, in
the same process. Timings alternate between the two in rounds, because CPU
speed drifts within minutes; the table gives each one's median ms/step and
the ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from snndist.config import load_config
from snndist.data.order import plan_shards
from snndist.train.replica import Replica
from snndist.train.step import Layout

CONFIGS = {"tutorial": "configs/tutorial.yaml", "shd": "configs/bench_shd.yaml"}


def snndist_step(cfg):
    """A zero-argument callable running one snndist train step, and the input encoding used."""
    replica = Replica(cfg, Layout.over(jax.local_devices()[:1]))
    shard = plan_shards(np.arange(cfg.train.global_batch), 1, 1)[0]

    def run():
        jax.block_until_ready(replica.train_step(shard)["train/loss"])

    return run, replica.loader("train").encoding


def seed_step(cfg):
    """The seed tutorial's brainstate model and train function on ``cfg``'s shapes (None if absent)."""
    try:
        import brainpy
        import brainstate
        import braintools
        import brainunit as u
    except ImportError:
        return None
    d, layer = cfg.data, cfg.model.layers[0]
    brainstate.environ.set(dt=d.dt_ms * u.ms)

    class SNN(brainstate.nn.Module):  # as in seed_tutorial.py, plus optional recurrence
        def __init__(self):
            super().__init__()
            scale = 7 * (1 - (u.math.exp(-brainstate.environ.get_dt() / (1 * u.ms))))
            self.i2r = brainstate.nn.Linear(d.num_inputs, layer.size, w_init=brainstate.nn.init.KaimingNormal(
                scale=scale, unit=u.mA), b_init=brainstate.nn.init.ZeroInit(unit=u.mA))
            self.rec = brainstate.nn.Linear(layer.size, layer.size, w_init=brainstate.nn.init.KaimingNormal(
                unit=u.mA), b_init=None) if layer.recurrent else None
            self.syn = brainpy.state.Expon(layer.size, tau=layer.tau_syn_ms * u.ms,
                                           g_initializer=brainstate.nn.init.Constant(0. * u.mA))
            self.r = brainpy.state.LIF(layer.size, tau=layer.tau_mem_ms * u.ms, V_reset=0 * u.mV,
                                       V_rest=0 * u.mV, V_th=1. * u.mV, spk_fun=braintools.surrogate.ReluGrad())
            self.r2o = brainstate.nn.Linear(layer.size, d.num_classes, w_init=brainstate.nn.init.KaimingNormal())
            self.o = brainpy.state.Expon(d.num_classes, tau=10. * u.ms, g_initializer=brainstate.nn.init.Constant(0.))

        def update(self, spike):
            current = self.i2r(spike)
            if self.rec is not None:
                current = current + self.rec(self.r.get_spike())
            return self.o(self.r2o(self.r(self.syn(current))))

    net = SNN()
    batch = cfg.train.global_batch
    x_data = brainstate.random.rand(d.timesteps, batch, d.num_inputs) < d.rate_hz * u.Hz * brainstate.environ.get_dt()
    y_data = brainstate.random.randint(0, d.num_classes, batch)
    params = net.states(brainstate.ParamState)
    optimizer = braintools.optim.Adam(lr=cfg.train.lr, beta1=0.9, beta2=0.999)
    optimizer.register_trainable_weights(params)

    def loss_fn():
        predictions = u.math.mean(brainstate.transform.for_loop(net.update, x_data), axis=0)
        return braintools.metric.softmax_cross_entropy_with_integer_labels(predictions, y_data).mean()

    @brainstate.transform.jit
    def train_fn():
        brainstate.nn.init_all_states(net, batch_size=batch)
        grads, loss = brainstate.transform.grad(loss_fn, params, return_value=True)()
        optimizer.update(grads)
        return loss

    return lambda: jax.block_until_ready(train_fn())


def time_interleaved(fns: dict, steps: int, rounds: int) -> dict[str, float]:
    """Median ms/step of each callable, alternating blocks of ``steps`` calls."""
    for fn in fns.values():
        fn(), fn()  # compile and warm up
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(steps):
                t = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t)
    return {name: 1000 * statistics.median(s) for name, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tutorial,shd", help="comma-separated: tutorial, shd")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per block")
    parser.add_argument("--rounds", type=int, default=5, help="blocks per implementation, alternating")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {jax.device_count()} device(s)")
    print(f"{'config':<10} {'snndist ms':>11} {'encoding':>9} {'seed ms':>9} {'seed/snndist':>13}")
    for name in args.configs.split(","):
        cfg = load_config(CONFIGS[name])
        ours, encoding = snndist_step(cfg)
        fns = {"snndist": ours}
        reference = seed_step(cfg)
        if reference is not None:
            fns["seed"] = reference
        ms = time_interleaved(fns, args.steps, args.rounds)
        seed_ms = f"{ms['seed']:9.2f}" if "seed" in ms else f"{'n/a':>9}"
        ratio = f"{ms['seed'] / ms['snndist']:12.2f}x" if "seed" in ms else f"{'n/a':>13}"
        print(f"{name:<10} {ms['snndist']:11.2f} {encoding:>9} {seed_ms} {ratio}", flush=True)
    if reference is None:
        print("seed libraries not importable: pip install brainstate brainpy braintools brainunit")


if __name__ == "__main__":
    main()
