"""Dense-matmul FLOPs of one train step: the work no implementation of the step can skip.

Counts ``2 m k n`` for every matrix product of the forward pass and of the
backward pass (weight gradients, and the gradient to each layer's input
except the spikes fed in, which need none), as if every spike tensor were
dense. Elementwise work is left out: it is what separates a step from this floor.
"""
from __future__ import annotations

from snndist.model.network import NetworkSpec


def train_step_flops(spec: NetworkSpec, batch: int) -> dict[str, float]:
    """FLOPs of one step on ``batch`` samples, by product: ``{input_fwd, input_bwd, recurrent_fwd, ...}``."""
    rows = batch * spec.timesteps  # every product runs over all samples and steps
    flops = dict.fromkeys(("input_fwd", "input_bwd", "recurrent_fwd", "recurrent_bwd", "readout_fwd",
                           "readout_bwd"), 0.0)
    fan_in = spec.num_inputs
    for i, layer in enumerate(spec.layers):
        product = 2.0 * rows * fan_in * layer.size
        flops["input_fwd"] += product
        flops["input_bwd"] += product * (2 if i else 1)  # dW; and d(previous layer's spikes) past the first
        if layer.recurrent:
            flops["recurrent_fwd"] += 2.0 * rows * layer.size**2
            flops["recurrent_bwd"] += 4.0 * rows * layer.size**2  # dV and d(spikes)
        fan_in = layer.size
    flops["readout_fwd"] = 2.0 * rows * fan_in * spec.num_classes
    flops["readout_bwd"] = 2 * flops["readout_fwd"]
    return flops
