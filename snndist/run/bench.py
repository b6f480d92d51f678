"""``snndist bench``: how fast a config trains on this machine, to size a cluster run before submitting it.

One replica over this process's devices runs the config's real train step
(data loading included, as in training): the first step's time is the
compile time, then the median of timed steps, each waited for. The floor is
the step's dense-matmul FLOPs (``model.flops``) at the matmul rate this
machine shows in the same run.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from snndist.config import Config
from snndist.data.order import plan_shards
from snndist.model.flops import train_step_flops
from snndist.model.precision import MATMUL_DTYPES, matmul
from snndist.train.local import LocalRunner


def matmul_rate(size: int = 4096, repeats: int = 3, dtype=None) -> float:
    """FLOP/s of a jitted ``size``-cubed matmul on the default device (median of ``repeats``): float32, or
    ``dtype`` inputs accumulated in float32 as the step's products are (``model.precision``)."""
    a = jnp.ones((size, size), jnp.float32)
    product = jax.jit(lambda m: matmul(m, m, dtype))
    product(a).block_until_ready()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        product(a).block_until_ready()
        times.append(time.perf_counter() - began)
    return 2.0 * size**3 / statistics.median(times)


def bench(cfg: Config, steps: int = 20, say: Callable[[str], None] = print) -> dict:
    """Compile time, ms/step, samples/s, peak memory and the FLOP floor of ``cfg``'s train step here."""
    runner = LocalRunner(cfg)
    batch = cfg.train.global_batch
    order = np.random.default_rng(0)
    indices = lambda: order.choice(runner.num_samples, batch, replace=batch > runner.num_samples)
    say(f"compiling the train step ({batch} samples x {cfg.data.timesteps} steps on "
        f"{runner.replica.local_devices} {jax.devices()[0].platform} device(s))")
    began = time.perf_counter()
    jax.block_until_ready(runner.step(indices())["train/loss"])
    compile_s = time.perf_counter() - began
    times = []
    for i in range(steps):
        began = time.perf_counter()
        jax.block_until_ready(runner.step(indices())["train/loss"])
        times.append(time.perf_counter() - began)
        if (i + 1) % max(1, steps // 4) == 0:
            say(f"  {i + 1}/{steps} steps timed")
    ms = 1000.0 * statistics.median(times)
    peak_memory = _peak_memory(runner, batch)  # before the matmul rate's own large buffers
    say(f"measuring this machine's matmul rate ({cfg.train.precision})")
    device = jax.devices()[0]
    # An accelerator finishes a 4096-cubed product in well under a millisecond: launch overhead would show.
    with jax.default_matmul_precision(cfg.train.matmul_precision):  # the step's own (TF32 or true f32 on GPUs)
        rate = matmul_rate(4096 if device.platform == "cpu" else 8192, dtype=MATMUL_DTYPES[cfg.train.precision])
    flops = sum(train_step_flops(runner.replica.spec, batch).values())
    return {"ms_per_step": ms, "samples_per_s": batch / (ms / 1000.0), "compile_s": compile_s,
            "peak_memory_bytes": peak_memory, "flop_floor_ms": 1000.0 * flops / rate,
            "step_gflop": flops / 1e9, "matmul_gflop_per_s": rate / 1e9,
            "precision": cfg.train.precision,
            "device": f"{device.platform} ({device.device_kind}) x {runner.replica.local_devices}"}


def _peak_memory(runner: LocalRunner, batch: int) -> int:
    """One device's peak: its own count where it keeps one (GPU, TPU); on CPU, XLA's plan for the step's
    buffers on each device."""
    stats = jax.devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    replica = runner.replica
    shard = plan_shards(np.arange(batch) % runner.num_samples, 1, replica.local_devices)[0]
    return replica.step_memory_bytes(shard)


def format_report(result: dict) -> str:
    gib = result["peak_memory_bytes"] / 2**30
    return "\n".join([
        f"device            {result['device']}",
        f"compile           {result['compile_s']:.2f} s (first step)",
        f"train step        {result['ms_per_step']:.2f} ms  ({result['samples_per_s']:.0f} samples/s)",
        f"peak memory       {gib:.3f} GiB per device",
        f"dense-matmul floor {result['flop_floor_ms']:.2f} ms  ({result['step_gflop']:.3f} GFLOP at "
        f"{result['matmul_gflop_per_s']:.1f} GFLOP/s {result['precision']} measured here); step / floor = "
        f"{result['ms_per_step'] / result['flop_floor_ms']:.2f}",
    ])
