"""Each fast path of the step against the plain definition it replaces, on random inputs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snndist.config import load_config
from snndist.model.lif_layer import lif_layer, scanned_layer
from snndist.model.network import REDUCTIONS, forward, init_params, loss_fn, readout_logits
from snndist.model.neurons import LIFSpec, LIFState
from snndist.model.surrogate import make_spike_fn
from snndist.train.spec import network_spec

pytestmark = pytest.mark.usefixtures("strict_dtypes")


@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("recurrent", [True, False])
@pytest.mark.parametrize("inputs", ["spikes", "drive"])
@pytest.mark.parametrize("loop", ["in_loop", "batched"])
def test_the_layers_own_backward_pass_equals_autodiff_of_the_scan(reset, recurrent, inputs, loop):
    lif = LIFSpec.create(dt_ms=1.0, tau_mem_ms=8.0, tau_syn_ms=4.0, threshold=1.0, v_reset=-0.2, v_rest=0.1,
                         resistance=1.3, reset=reset)
    # The accelerators' layout: products over all steps outside the loop, 3 steps per iteration (40 is no
    # multiple of 3: the remainder is checked too).
    fast = lif._replace(batched_products=True, unroll=3) if loop == "batched" else lif
    spike = make_spike_fn("fast_sigmoid")
    k = jax.random.split(jax.random.PRNGKey(0), 8)
    if inputs == "spikes":  # spikes of a layer below, times W plus b inside the layer
        x = jax.random.bernoulli(k[0], 0.3, (40, 3, 5)).astype(jnp.float32)
        w, b = 1.2 * jax.random.normal(k[6], (5, 7)), 0.3 + 0.1 * jax.random.normal(k[7], (7,))
    else:  # the drive itself (event input)
        x, w, b = 0.8 * jax.random.normal(k[0], (40, 3, 7)) + 0.6, None, None
    w_rec = 0.5 * jax.random.normal(k[1], (7, 7)) if recurrent else None
    # A state to start from and cotangents on every output (the voltages' and the last state's too,
    # which one chunk of a longer run receives): all of the backward pass is checked.
    start = LIFState(*(jax.random.normal(key, (3, 7)) for key in jax.random.split(k[2], 3)))
    start = start._replace(s=(start.s > 0.5).astype(jnp.float32))
    g_u, g_s = jax.random.normal(k[3], (40, 3, 7)), jax.random.normal(k[4], (40, 3, 7))
    g_last = LIFState(*(jax.random.normal(key, (3, 7)) for key in jax.random.split(k[5], 3)))

    def pulled(layer, spec):
        (u, s, last), vjp = jax.vjp(lambda *a: layer(spec, spike, True, *a), x, w, b, w_rec, start)
        return (u, s), vjp((g_u, g_s, g_last))

    (u0, s0), grads0 = pulled(scanned_layer, lif)
    (u1, s1), grads1 = pulled(lif_layer, fast)
    if loop == "in_loop":  # the same forward operations, in the same order
        np.testing.assert_array_equal(u1, u0)
    else:  # one product over all steps may sum in another order
        np.testing.assert_allclose(u1, u0, rtol=1e-6, atol=1e-6)
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


@pytest.mark.parametrize("reduce,encoding", [("mean", "dense"), ("max", "events"), ("last", "events")])
def test_remat_in_chunks_gives_the_same_loss_and_gradients(reduce, encoding):
    from snndist.data.events import to_events

    overrides = ["data.num_inputs=30", "data.timesteps=24", "model.layers[0].size=12",
                 "model.layers[0].rate_reg={strength: 1.0e-3, low_hz: 20.0, high_hz: 200.0}",
                 "model.layers[1]={size: 6, recurrent: true, reset: hard}", f"model.readout.reduce={reduce}"]
    whole = network_spec(load_config("configs/bench_shd.yaml", overrides))
    chunked = network_spec(load_config("configs/bench_shd.yaml", [*overrides, "train.remat=6"]))
    assert chunked.remat_steps == 6
    params = init_params(jax.random.PRNGKey(7), whole)
    spikes = np.asarray(jax.random.bernoulli(jax.random.PRNGKey(8), 0.25, (5, 24, 30)))
    x = to_events(spikes, 400) if encoding == "events" else jnp.asarray(spikes, jnp.float32)
    y = jnp.arange(5) % whole.num_classes

    def loss_and_grads(spec):
        return jax.value_and_grad(lambda p: loss_fn(p, x, y, spec), has_aux=True)(params)

    (loss0, aux0), grads0 = loss_and_grads(whole)
    (loss1, aux1), grads1 = loss_and_grads(chunked)
    np.testing.assert_allclose(loss1, loss0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(aux1), jax.tree.leaves(aux0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(grads1), jax.tree.leaves(grads0)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_remat_memory_grows_with_the_chunk_not_with_t():
    def temp_bytes(timesteps, overrides):
        spec = network_spec(load_config("configs/bench_shd.yaml", [f"data.timesteps={timesteps}", *overrides]))
        params = jax.eval_shape(lambda: init_params(jax.random.PRNGKey(0), spec))
        x = jax.ShapeDtypeStruct((32, timesteps, 700), jnp.bool_)
        y = jax.ShapeDtypeStruct((32,), jnp.int32)
        step = jax.jit(jax.grad(lambda p, x, y: loss_fn(p, x, y, spec)[0]))
        return step.lower(params, x, y).compile().memory_analysis().temp_size_in_bytes

    plain = {t: temp_bytes(t, []) for t in (400, 800)}
    remat = {t: temp_bytes(t, ["train.remat=20"]) for t in (400, 800)}
    assert plain[800] > 1.8 * plain[400], plain  # every step's state is kept
    # Remat keeps one chunk's steps and the states between chunks ([batch, n] each): a tenth of the slope.
    assert remat[800] - remat[400] < 0.1 * (plain[800] - plain[400]), (remat, plain)
    assert remat[400] < 0.25 * plain[400], (remat, plain)  # the bar, at T=400 already
    # Each added chunk keeps the layer's I and U ([32, 256] float32 each), not its spikes, recomputed from U.
    state_bytes = 32 * 256 * 4
    assert (remat[800] - remat[400]) / 20 < 2.5 * state_bytes, (remat, state_bytes)


def test_bf16_products_stay_close_to_f32():
    overrides = ["data.num_inputs=64", "data.timesteps=40", "model.layers[0].size=32"]
    f32 = network_spec(load_config("configs/bench_shd.yaml", overrides))
    bf16 = network_spec(load_config("configs/bench_shd.yaml", [*overrides, "train.precision=bf16"]))
    params = init_params(jax.random.PRNGKey(9), f32)
    x = jax.random.bernoulli(jax.random.PRNGKey(10), 0.1, (16, 40, 64))
    y = jnp.arange(16) % f32.num_classes

    def loss_and_grads(spec):
        return jax.value_and_grad(lambda p: loss_fn(p, x, y, spec)[0])(params)

    (loss32, grads32), (loss16, grads16) = loss_and_grads(f32), loss_and_grads(bf16)
    assert loss16 != loss32, "the bf16 path must round something"
    # bf16 keeps 8 bits of mantissa: ~0.4% per product; a spike flipped by it moves the loss a little more.
    np.testing.assert_allclose(loss16, loss32, rtol=1e-2)
    flat32, flat16 = (jnp.concatenate([g.ravel() for g in jax.tree.leaves(t)]) for t in (grads32, grads16))
    cosine = flat32 @ flat16 / (jnp.linalg.norm(flat32) * jnp.linalg.norm(flat16))
    assert cosine > 0.98, float(cosine)


def test_the_platform_picks_the_time_loop_and_the_config_overrides_it():
    cfg = load_config("configs/bench_shd.yaml")
    loop = lambda spec: {(l.lif.batched_products, l.lif.unroll) for l in spec.layers}
    assert loop(network_spec(cfg, platform="cpu")) == {(False, 1)}
    assert loop(network_spec(cfg, platform="gpu")) == loop(network_spec(cfg, platform="tpu")) == {(True, 10)}
    chosen = load_config("configs/bench_shd.yaml", ["train.products=in_loop", "train.unroll=4"])
    assert loop(network_spec(chosen, platform="gpu")) == {(False, 4)}


def test_the_accelerators_time_loop_gives_the_networks_loss_and_gradients():
    overrides = ["data.num_inputs=40", "data.timesteps=30", "model.layers[0].size=16",
                 "model.layers[1]={size: 8, recurrent: true, reset: hard}"]
    cpu = network_spec(load_config("configs/bench_shd.yaml", overrides), platform="cpu")
    # unroll 3, not the accelerators' 10: the same code path, a quarter of the compile time
    gpu = network_spec(load_config("configs/bench_shd.yaml", [*overrides, "train.unroll=3"]), platform="gpu")
    assert gpu.layers[0].lif.batched_products
    params = init_params(jax.random.PRNGKey(11), cpu)
    x = jax.random.bernoulli(jax.random.PRNGKey(12), 0.2, (6, 30, 40))
    y = jnp.arange(6) % cpu.num_classes
    (loss0, grads0), (loss1, grads1) = (jax.jit(jax.value_and_grad(lambda p: loss_fn(p, x, y, spec)[0]))(params)
                                        for spec in (cpu, gpu))
    np.testing.assert_allclose(loss1, loss0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads1), jax.tree.leaves(grads0)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_sums_with_written_gradients_equal_autodiff_of_the_plain_sums():
    from snndist.model.sums import plus_bias, weighted_sum_leading

    k = jax.random.split(jax.random.PRNGKey(11), 4)
    x, b, c = jax.random.normal(k[0], (30, 6, 5)), jax.random.normal(k[1], (5,)), jax.random.uniform(k[2], (30,))
    g = jax.random.normal(k[3], (30, 6, 5))
    ours = jax.vjp(plus_bias, x, b)
    plain = jax.vjp(lambda x, b: x + b[None, None, :], x, b)
    np.testing.assert_array_equal(ours[0], plain[0])
    for a, e in zip(ours[1](g), plain[1](g)):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5)
    ours = jax.vjp(lambda x: weighted_sum_leading(c, x), x)
    plain = jax.vjp(lambda x: jnp.einsum("t,tbn->bn", c, x), x)
    np.testing.assert_allclose(ours[0], plain[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours[1](g[0])[0], plain[1](g[0])[0], rtol=1e-6, atol=1e-6)
