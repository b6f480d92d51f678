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


@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("recurrent", [True, False])
@pytest.mark.parametrize("inputs", ["data", "spikes", "drive"])
def test_int8_spike_products_are_as_close_to_float64_as_f32s(reset, recurrent, inputs):
    lif = LIFSpec.create(dt_ms=1.0, tau_mem_ms=8.0, tau_syn_ms=4.0, threshold=1.0, v_reset=-0.2, v_rest=0.1,
                         resistance=1.3, reset=reset)
    spike = make_spike_fn("fast_sigmoid")
    k = jax.random.split(jax.random.PRNGKey(1), 8)
    steps, batch, n_in, n = 30, 6, 50, 20
    w, b = 0.5 * jax.random.normal(k[6], (n_in, n)), 0.1 * jax.random.normal(k[7], (n,))
    if inputs == "data":  # bool spikes, whose product with w is int8 too
        x = jax.random.bernoulli(k[0], 0.2, (steps, batch, n_in))
    elif inputs == "spikes":  # a layer below's float spikes: an f32 product, and a gradient to pass down
        x = jax.random.bernoulli(k[0], 0.2, (steps, batch, n_in)).astype(jnp.float32)
    else:  # the drive itself (event input)
        x, w, b = 0.8 * jax.random.normal(k[0], (steps, batch, n)) + 0.6, None, None
    w_rec = 0.5 * jax.random.normal(k[1], (n, n)) if recurrent else None
    start = LIFState(*(jax.random.normal(key, (batch, n)) for key in jax.random.split(k[2], 3)))
    start = start._replace(s=(start.s > 0.5).astype(jnp.float32))
    g_u, g_s = jax.random.normal(k[3], (steps, batch, n)), jax.random.normal(k[4], (steps, batch, n))
    g_last = LIFState(*(jax.random.normal(key, (batch, n)) for key in jax.random.split(k[5], 3)))
    differentiable = (x, w, b, w_rec, start) if inputs != "data" else (w, b, w_rec, start)

    def pulled(spec, dtype):
        cast = lambda tree: jax.tree.map(lambda a: a.astype(dtype) if a.dtype != jnp.bool_ else a, tree)
        layer = lambda *a: lif_layer(spec, spike, inputs == "spikes", *((x,) if inputs == "data" else ()), *a)
        (u, s, last), vjp = jax.vjp(layer, *cast(differentiable))
        return jax.tree.leaves(((u, last), vjp(cast((g_u, g_s, g_last))))), s

    with jax.enable_x64(True):  # the float64 layer is the reference; the int8 path is float32's only
        exact, spikes = pulled(lif._replace(int8_spikes=True), jnp.float64)
        exact, spikes = [np.asarray(a) for a in exact], np.asarray(spikes)
    plain, plain_spikes = pulled(lif, jnp.float32)
    ours, our_spikes = pulled(lif._replace(int8_spikes=True), jnp.float32)
    assert float(spikes.mean()) > 0.05, "the layer must spike for the check to mean anything"
    np.testing.assert_array_equal(our_spikes, spikes)
    np.testing.assert_array_equal(plain_spikes, spikes)
    if inputs == "data" or recurrent:
        assert any(not np.array_equal(a, b) for a, b in zip(ours, plain)), "the int8 path must run"
    else:  # no int8 product: float inputs (a layer below's spikes) or a drive, and no recurrence
        for a, b in zip(ours, plain):
            np.testing.assert_array_equal(a, b)
    for mine, f32, reference in zip(ours, plain, exact):
        f32_error = np.abs(np.asarray(f32, np.float64) - reference).max()
        my_error = np.abs(np.asarray(mine, np.float64) - reference).max()
        # 4x f32's own error, or 2^-20 of the largest value where f32 gets a sum of a few terms all but exact
        assert my_error <= max(4 * f32_error, 2**-20 * np.abs(reference).max()), (my_error, f32_error)


def test_int8_digit_products_are_bounded_by_the_fixed_point_and_keep_non_finite_values():
    from snndist.model.precision import int8_digits, spikes_times

    rng = np.random.default_rng(3)
    spikes = rng.random((40, 300)) < 0.3
    a = rng.standard_normal((300, 24)) * np.logspace(-3, 3, 24)  # columns of very different sizes
    a[:, 5] = 0.0
    exact = spikes.astype(np.float64) @ a
    a32 = jnp.asarray(a, jnp.float32)
    ours = np.asarray(spikes_times(jnp.asarray(spikes, jnp.int8), *int8_digits(a32)), np.float64)
    # Each value rounded to 2^-24 of its column's largest (the f32 input's own rounding included), over the
    # spikes of a row; then f32's rounding of the three digits' sum.
    bound = 2**-23 * np.abs(a).max(axis=0) * spikes.sum(axis=1, keepdims=True) + 2**-22 * np.abs(exact)
    assert (np.abs(ours - exact) <= bound).all()
    assert (ours[:, 5] == 0).all()
    for bad in (np.nan, np.inf):
        a32 = jnp.asarray(a, jnp.float32).at[7, 2].set(bad)
        out = np.asarray(spikes_times(jnp.asarray(spikes, jnp.int8), *int8_digits(a32)))
        assert not np.isfinite(out[:, 2]).any(), "a non-finite value must not vanish into the digits"
        np.testing.assert_array_equal(np.delete(out, 2, axis=1), np.delete(ours, 2, axis=1).astype(np.float32))


def test_the_networks_int8_spike_products_give_f32s_loss_and_gradients():
    overrides = ["data.num_inputs=64", "data.timesteps=40", "model.layers[0].size=32",
                 "model.layers[1]={size: 16, recurrent: true, reset: hard}"]
    f32 = network_spec(load_config("configs/bench_shd.yaml", [*overrides, "train.spike_products=f32"]))
    int8 = network_spec(load_config("configs/bench_shd.yaml", [*overrides, "train.spike_products=int8"]))
    assert {l.lif.int8_spikes for l in int8.layers} == {True} and {l.lif.int8_spikes for l in f32.layers} == {False}
    params = init_params(jax.random.PRNGKey(13), f32)
    x = jax.random.bernoulli(jax.random.PRNGKey(14), 0.1, (16, 40, 64))
    y = jnp.arange(16) % f32.num_classes
    _assert_same_loss_and_gradients(f32, int8, params, x, y, of_largest=1e-5)


def test_int8_spike_products_are_chosen_on_cpus_with_int8_matrix_units():
    from snndist.train.spec import int8_matrix_units

    int8 = lambda cfg, **kw: {l.lif.int8_spikes for l in network_spec(cfg, **kw).layers}
    auto = load_config("configs/bench_shd.yaml")
    assert auto.train.spike_products == "auto"
    assert int8(auto, platform="cpu") == {int8_matrix_units()}
    assert int8(auto, platform="gpu") == {False}
    chosen = load_config("configs/bench_shd.yaml", ["train.spike_products=int8"])
    assert int8(chosen, platform="gpu") == {True}
    # A smooth spike function of a test's own makes spikes that are not 0s and 1s.
    assert int8(chosen, platform="cpu", spike_fn=jax.nn.sigmoid) == {False}


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
    _assert_same_loss_and_gradients(cpu, gpu, params, x, y, atol=1e-6)


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


def _assert_same_loss_and_gradients(reference, other, params, x, y, atol=0.0, of_largest=0.0):
    """The two specs' loss to 1e-6, their gradients to 1e-4 plus ``atol`` or ``of_largest`` of the largest."""
    (loss0, grads0), (loss1, grads1) = (jax.jit(jax.value_and_grad(lambda p: loss_fn(p, x, y, spec)[0]))(params)
                                        for spec in (reference, other))
    np.testing.assert_allclose(loss1, loss0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads1), jax.tree.leaves(grads0)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=max(atol, of_largest * float(jnp.abs(b).max())))
