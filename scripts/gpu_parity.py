"""Loss and gradients on the accelerator against the CPU, in one process, on the same weights and inputs.

Two cases: the seed's parity fixture (tests/seed_parity.npz, the tutorial network) and the SHD-sized
recurrent network (configs/bench_shd.yaml) on random 5%-density input. Each at matmul precision
``highest`` and at the platform's default (TF32 on recent NVIDIA GPUs, bf16 passes on TPU).
Prints one markdown table: the loss's and the largest gradient's difference relative to the CPU's
(largest |difference| over largest |CPU value|, per tensor), hidden spikes that differ, and whether
everything is within 1e-5.

    python scripts/gpu_parity.py            # needs a non-CPU JAX device
"""
from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from snndist.config import load_config
from snndist.model.network import forward, init_params, loss_fn
from snndist.train.spec import network_spec

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-5


def seed_case():
    ref = np.load(ROOT / "tests" / "seed_parity.npz")
    params = {"hidden0": {"w": ref["w_in"], "b": ref["b_in"]}, "readout": {"w": ref["w_out"], "b": ref["b_out"]}}
    return network_spec(load_config(ROOT / "configs" / "tutorial.yaml")), params, ref["x"].transpose(1, 0, 2), ref["y"]


def shd_case(batch: int = 128):
    spec = network_spec(load_config(ROOT / "configs" / "bench_shd.yaml"))
    rng = np.random.default_rng(0)
    x = (rng.random((batch, 100, 700)) < 0.05).astype(np.float32)
    y = rng.integers(0, 20, batch).astype(np.int32)
    return spec, jax.device_get(init_params(jax.random.PRNGKey(0), spec)), x, y


def evaluate(spec, params, x, y, device, precision: str):
    def both(p, x, y):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, x, y, spec)
        return loss, grads, forward(p, x, spec).spikes

    with jax.default_matmul_precision(precision):
        return jax.device_get(jax.jit(both)(*jax.device_put((params, x, y), device)))


def relative(mine, reference) -> float:
    scale = max(float(np.abs(reference).max()), 1e-30)
    return float(np.abs(np.asarray(mine) - np.asarray(reference)).max()) / scale


def main() -> int:
    cpu = jax.devices("cpu")[0]
    accelerator = jax.devices()[0]
    if accelerator.platform == "cpu":
        print("no accelerator: JAX sees only the CPU", file=sys.stderr)
        return 2
    print(f"{accelerator.platform} ({accelerator.device_kind}) against the CPU\n")
    print("| case | matmul precision | loss rel. diff | largest grad rel. diff | hidden spikes differing "
          f"| within {TOLERANCE:g} |")
    print("|---|---|---:|---:|---:|---|")
    all_within = True
    for name, case in (("tutorial (seed fixture)", seed_case), ("shd (700-256r-20, B 128)", shd_case)):
        spec, params, x, y = case()
        loss_c, grads_c, spikes_c = evaluate(spec, params, x, y, cpu, "highest")
        for precision in ("highest", "default"):
            loss_a, grads_a, spikes_a = evaluate(spec, params, x, y, accelerator, precision)
            loss_diff = relative(loss_a, loss_c)
            grad_diff = max(relative(a, c) for a, c in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_c)))
            flipped = sum(int((np.asarray(a) != np.asarray(c)).sum()) for a, c in zip(spikes_a, spikes_c))
            within = max(loss_diff, grad_diff) <= TOLERANCE
            all_within &= within or precision != "highest"
            print(f"| {name} | {precision} | {loss_diff:.1e} | {grad_diff:.1e} | {flipped} | {'yes' if within else 'no'} |")
    print(f"\nat precision highest, everything within {TOLERANCE:g}: {'yes' if all_within else 'NO'}")
    return 0 if all_within else 1


if __name__ == "__main__":
    sys.exit(main())
