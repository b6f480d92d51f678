"""snndist: distributed surrogate-gradient training of spiking neural networks."""
from snndist.config import Config, ConfigError, load_config
from snndist.network import forward, init_params, loss_fn, network_spec
from snndist.neurons import LIFSpec, LIFState, lif_step
from snndist.step import TrainState, make_eval_step, make_train_step
from snndist.surrogate import make_spike_fn

__all__ = [
    "Config", "ConfigError", "LIFSpec", "LIFState", "TrainState", "forward", "init_params",
    "lif_step", "load_config", "loss_fn", "make_eval_step", "make_spike_fn", "make_train_step",
    "network_spec",
]
