"""The math: surrogate spike functions, the LIF neuron, the network and its loss.

Pure JAX functions of plain specs and parameter pytrees; no config, no I/O, no Ray.
"""
from snndist._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "SURROGATE_DEFAULTS": "surrogate_params", "make_spike_fn": "surrogate", "SpikeFn": "surrogate",
    "LIFSpec": "neurons", "LIFState": "neurons", "lif_step": "neurons", "SpikeEvents": "inputs",
    "NetworkSpec": "network", "LayerSpec": "network", "RateReg": "network", "Init": "network",
    "forward": "network", "init_params": "network", "loss_fn": "network", "Trace": "network",
})
