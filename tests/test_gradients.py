"""BPTT through recurrent LIF layers: against finite differences and an unrolled loop."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snndist.config import load_config
from snndist.model.network import init_params, loss_fn
from snndist.train.spec import network_spec
from snndist.model.surrogate import make_spike_fn

pytestmark = pytest.mark.usefixtures("strict_dtypes")

RECURRENT = ["data.num_inputs=6", "data.timesteps=25", "data.num_classes=3", "data.rate_hz=200",
             "model.layers[0].size=5", "model.layers[0].recurrent=true",
             "model.layers[0].init_scale=8.0", "model.layers[0].rec_init_scale=2.0",
             "model.layers[1]={size: 3, recurrent: true, init_scale: 6.0, tau_mem_ms: 5.0, tau_syn_ms: 2.0}"]


def _problem(overrides, dtype):
    cfg = load_config("configs/tutorial.yaml", RECURRENT + overrides)
    params = jax.tree.map(lambda a: a.astype(dtype), init_params(jax.random.PRNGKey(3), network_spec(cfg)))
    x = jax.random.bernoulli(jax.random.PRNGKey(4), 0.2, (4, cfg.data.timesteps, cfg.data.num_inputs))
    y = jnp.array([0, 1, 2, 1])
    return cfg, params, x.astype(dtype), y


def _smooth_spike(alpha=2.0):
    # A differentiable "spike": the true gradient is then the BPTT gradient,
    # which finite differences can check.
    return lambda x: jax.nn.sigmoid(alpha * x)


def test_bptt_matches_finite_differences():
    # Soft reset only: the hard reset stops the gradient through the voltage it
    # drops (by design), so its BPTT gradient is not the function's gradient;
    # the unrolled-reference test below covers it.
    with jax.enable_x64(True):
        cfg, params, x, y = _problem(["model.layers[0].rate_reg={strength: 1.0e-4, low_hz: 50.0, high_hz: 150.0}"],
                                     jnp.float64)
        spec = network_spec(cfg, spike_fn=_smooth_spike())
        loss = jax.jit(lambda p: loss_fn(p, x, y, spec)[0])
        grads = jax.grad(loss)(params)
        leaves, treedef = jax.tree.flatten(params)
        rng = np.random.default_rng(0)
        for i, leaf in enumerate(leaves):
            direction = rng.standard_normal(leaf.shape)
            bump = lambda eps: jax.tree.unflatten(
                treedef, [l + eps * direction if j == i else l for j, l in enumerate(leaves)])
            eps = 1e-6
            numeric = (loss(bump(eps)) - loss(bump(-eps))) / (2 * eps)
            analytic = float(jnp.sum(jax.tree.leaves(grads)[i] * direction))
            assert abs(analytic) > 1e-8, f"leaf {i}: gradient vanished, the check would be empty"
            assert analytic == pytest.approx(float(numeric), rel=1e-5, abs=1e-9), f"leaf {i}"


def _unrolled_loss(params, x, y, cfg, spike):
    """The DESIGN.md equations, step by step, in plain Python loops."""
    dt = cfg.data.dt_ms
    inputs = jnp.swapaxes(x, 0, 1)  # [T, B, n]
    states = [dict(i=0.0, u=0.0, s=jnp.zeros((x.shape[0], l.size))) for l in cfg.model.layers]
    o = 0.0
    outs = []
    for t in range(cfg.data.timesteps):
        h = inputs[t]
        for k, layer in enumerate(cfg.model.layers):
            p, st = params[f"hidden{k}"], states[k]
            a, b = np.exp(-dt / layer.tau_syn_ms), np.exp(-dt / layer.tau_mem_ms)
            i = a * st["i"] + h @ p["w"] + p["b"][None, :] + st["s"] @ p["v"]
            if layer.reset == "soft":
                u = st["u"] - (layer.threshold - layer.v_reset) * st["s"]
            else:
                u = st["u"] - (jax.lax.stop_gradient(st["u"]) - layer.v_reset) * st["s"]
            u = layer.v_rest + (u - layer.v_rest) * b + (1 - b) * layer.resistance * i
            s = spike((u - layer.threshold) / (layer.threshold - layer.v_reset))
            states[k] = dict(i=i, u=u, s=s)
            h = s
        o = np.exp(-dt / cfg.model.readout.tau_ms) * o + h @ params["readout"]["w"] + params["readout"]["b"][None, :]
        outs.append(o)
    logits = jnp.mean(jnp.stack(outs), axis=0)
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_surrogate_bptt_matches_unrolled_reference(reset):
    cfg, params, x, y = _problem([f"model.layers[0].reset={reset}", f"model.layers[1].reset={reset}"], jnp.float32)
    spike = make_spike_fn("fast_sigmoid")
    spec = network_spec(cfg, spike_fn=spike)
    loss, grads = jax.value_and_grad(lambda p: loss_fn(p, x, y, spec)[0])(params)
    ref_loss, ref_grads = jax.value_and_grad(_unrolled_loss)(params, x, y, cfg, spike)
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-5)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        ref = ref_grads
        for key in path:
            ref = ref[key.key]
        assert np.abs(ref).max() > 0, f"{path}: zero gradient, the check would be empty"
        np.testing.assert_allclose(g, ref, rtol=2e-4, atol=1e-6 * np.abs(ref).max(), err_msg=str(path))
