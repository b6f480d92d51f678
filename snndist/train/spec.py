"""The network's plain spec from a run's config: where config values become the math's constants."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import jax

from snndist.config import Config
from snndist.model.network import Init, LayerSpec, NetworkSpec, RateReg
from snndist.model.neurons import LIFSpec
from snndist.model.precision import MATMUL_DTYPES
from snndist.model.surrogate import SpikeFn, make_spike_fn


# train.unroll's default on accelerators, where each loop iteration costs launches: measured on an H200
# (BENCHMARKS.md, "On a GPU"). On CPUs unrolling only grows the program.
ACCELERATOR_UNROLL = 10


def int8_matrix_units() -> bool:
    """Whether this machine's CPU has AMX tiles for int8 (``amx_int8`` in /proc/cpuinfo).

    The int8 spike products do 3 products (one a digit) where f32 does one, so they pay only where XLA's
    int8 rate is well above 3x its f32 rate: with AMX about 5x; with AVX-512 VNNI alone (an AMD EPYC) 1.5x,
    and the SHD step 1.4x slower in int8 (BENCHMARKS.md).
    """
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux
        return False
    return "amx_int8" in flags


def network_spec(cfg: Config, spike_fn: SpikeFn | None = None, platform: Optional[str] = None) -> NetworkSpec:
    """The spec of ``cfg``'s network; ``spike_fn`` overrides the configured surrogate (tests use a smooth one).

    ``platform`` (cpu, gpu, tpu; default: JAX's default backend here) picks ``train.products``,
    ``train.unroll`` and ``train.spike_products`` where they are left to it.
    """
    m, d, t = cfg.model, cfg.data, cfg.train
    matmul_dtype = MATMUL_DTYPES[t.precision]
    on_cpu = (platform or jax.default_backend()) == "cpu"
    batched = t.products == "batched" or (t.products == "auto" and not on_cpu)
    unroll = t.unroll or (1 if on_cpu else ACCELERATOR_UNROLL)
    # A spike_fn of the tests' own may be smooth: its spikes are not 0s and 1s.
    int8_spikes = spike_fn is None and (t.spike_products == "int8" or (
        t.spike_products == "auto" and on_cpu and int8_matrix_units()))
    layers = tuple(
        LayerSpec(size=l.size, recurrent=l.recurrent,
                  lif=LIFSpec.create(dt_ms=d.dt_ms, tau_mem_ms=l.tau_mem_ms, tau_syn_ms=l.tau_syn_ms,
                                     threshold=l.threshold, v_reset=l.v_reset, v_rest=l.v_rest,
                                     resistance=l.resistance, reset=l.reset, matmul_dtype=matmul_dtype,
                                     batched_products=batched, unroll=unroll,
                                     int8_spikes=int8_spikes),
                  init=Init(l.init, l.init_scale), rec_init=Init(l.init, l.rec_init_scale),
                  rate_reg=RateReg(l.rate_reg.strength, l.rate_reg.low_hz, l.rate_reg.high_hz))
        for l in m.layers)
    return NetworkSpec(
        num_inputs=d.num_inputs, num_classes=d.num_classes, timesteps=d.timesteps, dt_ms=d.dt_ms, layers=layers,
        readout_decay=math.exp(-d.dt_ms / m.readout.tau_ms), readout_init=Init(m.readout.init, m.readout.init_scale),
        reduce=m.readout.reduce, spike_fn=spike_fn or make_spike_fn(m.surrogate, **m.surrogate_params),
        matmul_dtype=matmul_dtype, remat_steps=t.remat, matmul_precision=t.matmul_precision)
