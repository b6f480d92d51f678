"""Training in one process: the network spec from a config, the optimiser, the jitted steps
on a device mesh, one replica of the network, and the single-process runner."""
from snndist._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "network_spec": "spec", "make_optimizer": "optim", "TrainState": "step", "Layout": "step",
    "make_train_step": "step", "make_eval_step": "step", "Replica": "replica", "Runner": "runner",
    "LocalRunner": "local",
})
