"""The network reproduces the seed library (seed_parity.npz) to float32 rounding."""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snndist.config import load_config
from snndist.data.events import to_events
from snndist.model.inputs import SpikeEvents
from snndist.model.network import forward, loss_fn
from snndist.train.spec import network_spec

pytestmark = pytest.mark.usefixtures("strict_dtypes")

FIXTURE = Path(__file__).parent / "seed_parity.npz"


@pytest.fixture(scope="module")
def seed():
    ref = dict(np.load(FIXTURE))
    # The fixture is the seed library's layout: time-major [T, B, n]; weights [in, out].
    assert ref["x"].shape == (200, 32, 100) and ref["w_in"].shape == (100, 4) and ref["w_out"].shape == (4, 2)
    assert ref["s_hidden"].sum() > 100, "the fixture must hold spikes, or the check is empty"
    params = {"hidden0": {"w": jnp.asarray(ref["w_in"]), "b": jnp.asarray(ref["b_in"])},
              "readout": {"w": jnp.asarray(ref["w_out"]), "b": jnp.asarray(ref["b_out"])}}
    x = ref["x"].transpose(1, 0, 2)  # -> [B, T, n], the project's input layout
    return ref, params, x, jnp.asarray(ref["y"])


def _inputs(x, encoding):
    if encoding == "dense":
        return jnp.asarray(x)
    return SpikeEvents(*map(jnp.asarray, to_events(x, capacity=256)))


@pytest.mark.parametrize("encoding", ["dense", "events"])
def test_forward_matches_seed(seed, encoding):
    ref, params, x, _ = seed
    spec = network_spec(load_config("configs/tutorial.yaml"))
    trace = forward(params, _inputs(x, encoding), spec)
    np.testing.assert_allclose(trace.voltages[0], ref["v_hidden"], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(trace.spikes[0], ref["s_hidden"])
    np.testing.assert_allclose(trace.readout, ref["readout"], atol=2e-6, rtol=0)


@pytest.mark.parametrize("encoding", ["dense", "events"])
def test_loss_and_gradients_match_seed(seed, encoding):
    ref, params, x, y = seed
    spec = network_spec(load_config("configs/tutorial.yaml"))
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, _inputs(x, encoding), y, spec)
    np.testing.assert_allclose(loss, ref["loss"], rtol=1e-6)
    for layer, name, key in [("hidden0", "w", "g_w_in"), ("hidden0", "b", "g_b_in"),
                             ("readout", "w", "g_w_out"), ("readout", "b", "g_b_out")]:
        scale = np.abs(ref[key]).max()
        assert scale > 0, f"{key} is all zero in the fixture"
        np.testing.assert_allclose(grads[layer][name], ref[key], atol=1e-5 * scale, rtol=0, err_msg=key)
