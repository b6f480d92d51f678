"""Each surrogate: Heaviside forward, its documented derivative backward."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snndist.model.surrogate import FAMILIES, make_spike_fn

pytestmark = pytest.mark.usefixtures("strict_dtypes")


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


# The formulas, written out again independently of the module.
EXPECTED = {
    "relu": lambda x: 0.3 * np.maximum(0.0, 1.0 - np.abs(x)),
    "sigmoid": lambda x: 4.0 * _sig(4.0 * x) * (1.0 - _sig(4.0 * x)),
    "fast_sigmoid": lambda x: 1.0 / (10.0 * np.abs(x) + 1.0) ** 2,
    "arctan": lambda x: 2.0 / (2.0 * (1.0 + (math.pi / 2.0 * 2.0 * x) ** 2)),
    "gaussian": lambda x: np.exp(-(x**2) / (2 * 0.25)) / (math.sqrt(2 * math.pi) * 0.5),
}
# at threshold, near it on both sides, far from it
POINTS = np.array([0.0, 1e-3, -1e-3, 0.1, -0.1, 0.5, -0.5, 0.99, 3.0, -3.0], np.float32)


def test_every_family_is_tested():
    assert set(EXPECTED) == set(FAMILIES)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_forward_is_heaviside(name):
    spike = make_spike_fn(name)
    np.testing.assert_array_equal(spike(jnp.asarray(POINTS)), (POINTS >= 0).astype(np.float32))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_derivative_matches_formula(name):
    spike = make_spike_fn(name)
    grads = jax.vmap(jax.grad(spike))(jnp.asarray(POINTS))
    np.testing.assert_allclose(grads, EXPECTED[name](POINTS.astype(np.float64)), rtol=1e-5, atol=1e-6)
    assert grads[0] == grads.max(), "each surrogate peaks at the threshold"


def test_parameters_change_the_derivative():
    wide = make_spike_fn("relu", alpha=0.5, width=2.0)
    assert float(jax.grad(wide)(jnp.float32(1.5))) == pytest.approx(0.5 * (2.0 - 1.5))
    narrow = make_spike_fn("gaussian", sigma=0.1)
    assert float(jax.grad(narrow)(jnp.float32(0.0))) == pytest.approx(1 / (math.sqrt(2 * math.pi) * 0.1), rel=1e-6)


def test_cotangent_is_scaled():
    spike = make_spike_fn("relu")
    _, vjp = jax.vjp(spike, jnp.float32(0.5))
    assert float(vjp(jnp.float32(2.0))[0]) == pytest.approx(2.0 * 0.3 * 0.5)


def test_unknown_family_and_parameter_are_errors():
    with pytest.raises(ValueError, match="unknown surrogate 'tanh'"):
        make_spike_fn("tanh")
    with pytest.raises(ValueError, match="takes no parameter 'sigma'"):
        make_spike_fn("relu", sigma=1.0)
