"""Each fast path of the step against the plain definition it replaces, on random inputs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snndist.config import load_config
from snndist.model.lif_layer import lif_layer, scanned_layer
from snndist.model.network import REDUCTIONS, forward, init_params, loss_fn, readout_logits
from snndist.model.neurons import LIFSpec
from snndist.model.surrogate import make_spike_fn
from snndist.train.spec import network_spec

pytestmark = pytest.mark.usefixtures("strict_dtypes")


@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("recurrent", [True, False])
def test_the_layers_own_backward_pass_equals_autodiff_of_the_scan(reset, recurrent):
    lif = LIFSpec.create(dt_ms=1.0, tau_mem_ms=8.0, tau_syn_ms=4.0, threshold=1.0, v_reset=-0.2, v_rest=0.1,
                         resistance=1.3, reset=reset)
    spike = make_spike_fn("fast_sigmoid")
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    drive = 0.8 * jax.random.normal(k[0], (40, 3, 7)) + 0.6
    w_rec = 0.5 * jax.random.normal(k[1], (7, 7)) if recurrent else None
    # Cotangents on both outputs: the voltages' too, which the loss alone would leave zero.
    g_u, g_s = jax.random.normal(k[2], drive.shape), jax.random.normal(k[3], drive.shape)

    def pulled(layer):
        outputs, vjp = jax.vjp(lambda d, v: layer(lif, spike, d, v), drive, w_rec)
        return outputs, vjp((g_u, g_s))

    (u0, s0), grads0 = pulled(scanned_layer)
    (u1, s1), grads1 = pulled(lif_layer)
    np.testing.assert_array_equal(u1, u0)  # the same forward operations, in the same order
    np.testing.assert_array_equal(s1, s0)
    assert float(s0.mean()) > 0.05, "the layer must spike for the check to mean anything"
    for mine, autodiff in zip(jax.tree.leaves(grads1), jax.tree.leaves(grads0)):
        np.testing.assert_allclose(mine, autodiff, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("reduce", ["mean", "last", "max"])
def test_readout_in_closed_form_equals_the_integrated_trace(reduce):
    cfg = load_config("configs/tutorial.yaml", ["data.timesteps=60", "data.rate_hz=80",
                                                f"model.readout.reduce={reduce}"])
    spec = network_spec(cfg)
    params = init_params(jax.random.PRNGKey(1), spec)
    x = jax.random.bernoulli(jax.random.PRNGKey(2), 0.08, (5, 60, 100))
    trace = forward(params, x, spec)
    np.testing.assert_allclose(readout_logits(params, trace.spikes[-1], spec), REDUCTIONS[reduce](trace.readout),
                               rtol=1e-5, atol=1e-6)


def test_network_loss_and_gradients_equal_the_plain_path():
    cfg = load_config("configs/bench_shd.yaml", ["data.num_inputs=40", "data.timesteps=30", "model.layers[0].size=16",
                                                 "model.layers[1]={size: 8, recurrent: true, reset: hard}"])
    spec = network_spec(cfg)
    params = init_params(jax.random.PRNGKey(5), spec)
    x = jax.random.bernoulli(jax.random.PRNGKey(6), 0.2, (6, 30, 40)).astype(jnp.float32)
    y = jnp.arange(6) % cfg.data.num_classes

    def loss_and_grads(layer_fn):
        return jax.value_and_grad(lambda p: loss_fn(p, x, y, spec, layer_fn=layer_fn)[0])(params)

    (fast_loss, fast), (plain_loss, plain) = loss_and_grads(lif_layer), loss_and_grads(scanned_layer)
    np.testing.assert_allclose(fast_loss, plain_loss, rtol=1e-6)
    for name in plain:
        for key in plain[name]:
            assert float(jnp.abs(plain[name][key]).max()) > 0, f"{name}.{key}: no gradient to compare"
            np.testing.assert_allclose(fast[name][key], plain[name][key], rtol=1e-4, atol=1e-6, err_msg=f"{name}.{key}")
