"""Heaviside spike functions with surrogate derivatives.

A spike is ``H(x)`` of the scaled voltage ``x = (U - theta) / (theta - U_reset)``,
with ``H(x) = 1`` where ``x >= 0``. Its true derivative is zero almost
everywhere, so backpropagation replaces it by a surrogate ``g(x)``:

=============  ==============================================  =================
family         g(x)                                            parameters
=============  ==============================================  =================
relu           alpha * max(0, width - |x|)                     alpha=0.3, width=1
sigmoid        alpha * sig(alpha x) * (1 - sig(alpha x))       alpha=4
fast_sigmoid   1 / (alpha |x| + 1)^2          (SuperSpike)     alpha=10
arctan         alpha / (2 (1 + (pi/2 * alpha * x)^2))          alpha=2
gaussian       alpha / (sqrt(2 pi) sigma) * exp(-x^2 / 2 sigma^2)  alpha=1, sigma=0.5
=============  ==============================================  =================

``relu`` with its defaults is the seed tutorial's ``ReluGrad``.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp

from snndist.model.surrogate_params import SURROGATE_DEFAULTS

SpikeFn = Callable[[jax.Array], jax.Array]


def _relu(x, alpha, width):
    return alpha * jnp.maximum(0.0, width - jnp.abs(x))


def _sigmoid(x, alpha):
    sig = jax.nn.sigmoid(alpha * x)
    return alpha * sig * (1.0 - sig)


def _fast_sigmoid(x, alpha):
    return 1.0 / (alpha * jnp.abs(x) + 1.0) ** 2


def _arctan(x, alpha):
    return alpha / (2.0 * (1.0 + (math.pi / 2.0 * alpha * x) ** 2))


def _gaussian(x, alpha, sigma):
    return alpha / (math.sqrt(2.0 * math.pi) * sigma) * jnp.exp(-(x**2) / (2.0 * sigma**2))


_DERIVATIVES = {"relu": _relu, "sigmoid": _sigmoid, "fast_sigmoid": _fast_sigmoid, "arctan": _arctan,
                "gaussian": _gaussian}
# name -> (derivative, default parameters)
FAMILIES: dict[str, tuple[Callable, dict[str, float]]] = {
    name: (_DERIVATIVES[name], defaults) for name, defaults in SURROGATE_DEFAULTS.items()}


def surrogate_grad(name: str, **params: float) -> Callable[[jax.Array], jax.Array]:
    """The surrogate derivative ``g(x)`` of family ``name`` (defaults filled in)."""
    derivative, defaults = FAMILIES[name]
    return functools.partial(derivative, **{**defaults, **params})


def make_spike_fn(name: str, **params: float) -> SpikeFn:
    """Heaviside forward, surrogate ``g`` backward, as a ``jax.custom_vjp``.

    Args:
      name: one of ``FAMILIES``.
      **params: the family's parameters; missing ones take the defaults above.

    Returns:
      ``spike(x)``: ``1.0`` where ``x >= 0`` else ``0.0``, in ``x``'s dtype; its
      VJP multiplies the cotangent by ``g(x)``.
    """
    if name not in FAMILIES:
        raise ValueError(f"unknown surrogate {name!r}; known: {', '.join(FAMILIES)}")
    unknown = set(params) - set(FAMILIES[name][1])
    if unknown:
        raise ValueError(f"surrogate {name!r} takes no parameter {sorted(unknown)[0]!r}")
    g = surrogate_grad(name, **params)

    @jax.custom_vjp
    def spike(x):
        return (x >= 0).astype(x.dtype)

    def spike_fwd(x):
        return spike(x), x

    def spike_bwd(x, cotangent):
        return (cotangent * g(x),)

    spike.defvjp(spike_fwd, spike_bwd)
    return spike
