"""How the layers walk through time, compared on this machine: ms per train step for each
``train.products`` (in_loop, batched) and ``train.unroll``, on the tutorial and SHD-scale configs
(and a large one with --large). The defaults that ``train.products: auto`` and ``train.unroll: null``
pick per platform come from this table (BENCHMARKS.md).

    python scripts/bench_time_loop.py [--unroll 1 4 10 25] [--steps 20] [--large]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import jax

from snndist.config import load_config
from snndist.run.bench import bench

ROOT = Path(__file__).resolve().parent.parent
LARGE = ["model.layers[0].size=1024", "train.global_batch=1024", "data.timesteps=250", "data.num_samples=2048"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unroll", type=int, nargs="+", default=[1, 4, 10, 25])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--large", action="store_true", help="also 1024 recurrent LIF, batch 1024, T 250")
    args = parser.parse_args()
    configs = [("tutorial", "tutorial.yaml", []), ("shd", "bench_shd.yaml", [])]
    if args.large:
        configs.append(("large", "bench_shd.yaml", LARGE))
    device = jax.devices()[0]
    print(f"{device.platform} ({device.device_kind}), jax {jax.__version__}; ms per train step, "
          f"median of {args.steps}\n")
    print("| config | products | " + " | ".join(f"unroll {u}" for u in args.unroll) + " |")
    print("|---|---|" + "---:|" * len(args.unroll))
    for name, file, overrides in configs:
        for products in ("in_loop", "batched"):
            cells = []
            for unroll in args.unroll:
                cfg = load_config(ROOT / "configs" / file,
                                  [*overrides, f"train.products={products}", f"train.unroll={unroll}"])
                cells.append(f"{bench(cfg, args.steps, say=lambda _: None)['ms_per_step']:.2f}")
            print(f"| {name} | {products} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
