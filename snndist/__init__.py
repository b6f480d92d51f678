"""snndist: distributed surrogate-gradient training of spiking neural networks.

The public names below load on first use, so that the CLI and the Ray
coordinator start without importing JAX.
"""
import importlib

_EXPORTS = {
    "Config": "snndist.config", "ConfigError": "snndist.errors", "load_config": "snndist.config",
    "LIFSpec": "snndist.neurons", "LIFState": "snndist.neurons", "lif_step": "snndist.neurons",
    "forward": "snndist.network", "init_params": "snndist.network", "loss_fn": "snndist.network",
    "network_spec": "snndist.network", "make_spike_fn": "snndist.surrogate",
    "TrainState": "snndist.step", "Layout": "snndist.step", "make_train_step": "snndist.step",
    "make_eval_step": "snndist.step", "Replica": "snndist.replica",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'snndist' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
