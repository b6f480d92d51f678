"""The network's plain spec from a run's config: where config values become the math's constants."""
from __future__ import annotations

import math

from snndist.config import Config
from snndist.model.network import Init, LayerSpec, NetworkSpec, RateReg
from snndist.model.neurons import LIFSpec
from snndist.model.precision import MATMUL_DTYPES
from snndist.model.surrogate import SpikeFn, make_spike_fn


def network_spec(cfg: Config, spike_fn: SpikeFn | None = None) -> NetworkSpec:
    """The spec of ``cfg``'s network; ``spike_fn`` overrides the configured surrogate (tests use a smooth one)."""
    m, d = cfg.model, cfg.data
    matmul_dtype = MATMUL_DTYPES[cfg.train.precision]
    layers = tuple(
        LayerSpec(size=l.size, recurrent=l.recurrent,
                  lif=LIFSpec.create(dt_ms=d.dt_ms, tau_mem_ms=l.tau_mem_ms, tau_syn_ms=l.tau_syn_ms,
                                     threshold=l.threshold, v_reset=l.v_reset, v_rest=l.v_rest,
                                     resistance=l.resistance, reset=l.reset, matmul_dtype=matmul_dtype),
                  init=Init(l.init, l.init_scale), rec_init=Init(l.init, l.rec_init_scale),
                  rate_reg=RateReg(l.rate_reg.strength, l.rate_reg.low_hz, l.rate_reg.high_hz))
        for l in m.layers)
    return NetworkSpec(
        num_inputs=d.num_inputs, num_classes=d.num_classes, timesteps=d.timesteps, dt_ms=d.dt_ms, layers=layers,
        readout_decay=math.exp(-d.dt_ms / m.readout.tau_ms), readout_init=Init(m.readout.init, m.readout.init_scale),
        reduce=m.readout.reduce, spike_fn=spike_fn or make_spike_fn(m.surrogate, **m.surrogate_params),
        matmul_dtype=matmul_dtype, remat_steps=cfg.train.remat)
