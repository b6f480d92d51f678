"""snndist: distributed surrogate-gradient training of spiking neural networks.

Layers, each importing only those below it (checked by ``lint-imports``):
``cli`` > ``run`` > ``dist`` > ``train`` > ``store``, ``track`` > ``data`` >
``config`` > ``model`` > ``errors``. The names below load on first use, so
that ``snndist --help``, config loading and the Ray coordinator start
without importing JAX (a training driver still imports it through Orbax).
"""
from snndist._lazy import lazy_exports
from snndist.xla_flags import add_xla_flags

add_xla_flags()  # before anything here starts JAX

__getattr__, __all__ = lazy_exports(__name__, {
    "Config": "config", "load_config": "config", "ConfigError": "errors", "SnndistError": "errors",
    "LIFSpec": "model.neurons", "LIFState": "model.neurons", "lif_step": "model.neurons",
    "NetworkSpec": "model.network", "forward": "model.network", "init_params": "model.network",
    "loss_fn": "model.network", "make_spike_fn": "model.surrogate", "network_spec": "train.spec",
    "TrainState": "train.step", "Layout": "train.step", "make_train_step": "train.step",
    "make_eval_step": "train.step", "Replica": "train.replica",
})
