"""Steps/s of the single-process trainer against Ray workers on both sync paths.

    python scripts/bench_distributed.py                    # SHD-scale config, 10 timed steps each
    python scripts/bench_distributed.py --steps 20 --config configs/tutorial.yaml

Every trainer is held to one core per worker (``cluster.pin_cpus``, an
affinity mask that XLA's thread pool follows; ``cpus_per_worker`` 1), the
single-process baseline too, so that two workers on a 2-core machine show
how the work scales. Same config and global batch throughout. The dataset is
cut to one global batch in a fixed order, so that every trainer makes its
synthetic samples once, in the warm-up, and the table times training.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from snndist.config import load_config
from snndist.data.order import batch_indices

WARMUP = 2


def fixed_batch(cfg_path: str, overrides: list[str]) -> list[str]:
    batch = load_config(cfg_path, overrides).train.global_batch
    return [f"data.num_samples={batch}", "data.shuffle=false", *overrides]


def time_steps(runner, cfg, steps: int) -> dict[str, float]:
    t = cfg.train
    sync = []
    for step in range(WARMUP + steps):
        if step == WARMUP:
            began = time.perf_counter()
        metrics = runner.step(batch_indices(step, t.global_batch, runner.num_samples, t.seed))
        float(np.asarray(metrics["train/loss"]))  # wait for the step
        if step >= WARMUP and "perf/grad_sync_s" in metrics:
            sync.append(metrics["perf/grad_sync_s"])
    seconds = (time.perf_counter() - began) / steps
    return {"ms": 1000 * seconds, "steps_per_s": 1 / seconds, "sync_ms": 1000 * float(np.median(sync)) if sync else None}


def single(config: str, overrides: list[str], steps: int) -> None:
    """Run in a child process: pinned to one core before JAX starts."""
    os.sched_setaffinity(0, [sorted(os.sched_getaffinity(0))[0]])
    from snndist.train.local import LocalRunner

    cfg = load_config(config, fixed_batch(config, overrides))
    print(json.dumps(time_steps(LocalRunner(cfg, devices=1), cfg, steps)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/bench_shd.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        return single(args.config, args.set, args.steps)

    import ray

    from snndist.dist.coordinator import RayRunner

    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    child = subprocess.run([sys.executable, __file__, "--single", "--config", args.config, "--steps", str(args.steps),
                            *sum((["--set", s] for s in args.set), [])], capture_output=True, text=True, env=env,
                           check=True)
    results = {"single process, 1 core": json.loads(child.stdout.strip().splitlines()[-1])}
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    try:
        for workers, sync in [(1, "coordinator"), (1, "xla"), (2, "coordinator"), (2, "xla")]:
            cfg = load_config(args.config, [*fixed_batch(args.config, args.set), f"train.workers={workers}", f"train.grad_sync={sync}",
                                            "cluster.cpus_per_worker=1", "cluster.pin_cpus=true"])
            runner = RayRunner(cfg, f"bench-{workers}-{sync}", say=lambda _: None)
            try:
                results[f"{workers} Ray worker(s), {sync}"] = time_steps(runner, cfg, args.steps)
            finally:
                runner.close()
    finally:
        ray.shutdown()

    cfg = load_config(args.config, args.set)
    base = results["single process, 1 core"]["steps_per_s"]
    one = {sync: results[f"1 Ray worker(s), {sync}"]["steps_per_s"] for sync in ("coordinator", "xla")}
    print(f"{args.config}: global batch {cfg.train.global_batch}, {args.steps} timed steps, 1 core per worker")
    print(f"{'trainer':<28} {'ms/step':>9} {'steps/s':>8} {'vs single':>10} {'vs 1 worker':>12} {'grad sync ms':>13}")
    for name, r in results.items():
        sync = "xla" if "xla" in name else "coordinator"
        vs_one = f"{r['steps_per_s'] / one[sync]:11.2f}x" if "2 Ray" in name else f"{'':>12}"
        sync_ms = f"{r['sync_ms']:13.1f}" if r["sync_ms"] is not None else f"{'in step':>13}"
        print(f"{name:<28} {r['ms']:9.1f} {r['steps_per_s']:8.2f} {r['steps_per_s'] / base:9.2f}x {vs_one} {sync_ms}")


if __name__ == "__main__":
    main()
