"""The topology check on a GPU machine: Ray workers on GPUs train as one CPU process does.

One CPU process (the reference, in this process) and Ray workers on the GPUs (every topology that fits
this machine's GPUs: 1 worker x 1 GPU, 1 x N, 2 x N/2, under both gradient syncs where there are two
workers) run the same 20 steps of the tutorial network with ``train.matmul_precision: highest``. Prints
one markdown table: the first step's gradient, the parameters after it and the loss after 20 steps,
relative to the CPU's, and whether each is within 1e-5 (the loss after 20 steps: 1e-3, as in
tests/test_distributed.py, since spikes near threshold may flip over 20 steps).

    python scripts/gpu_topology.py       # on a machine with NVIDIA GPUs and the cuda extra

With SNNDIST_TEST_ACCELERATORS_ON_CPU=1 the workers are scheduled on Ray's GPU resources but run JAX
on the CPU (a check of this script on a machine without GPUs, with a fake GPU count in GPUS=N).
"""
from __future__ import annotations

import os
import sys

import numpy as np

STEPS = 20
# As tests/test_distributed.py: an uneven batch over workers and devices; a larger input scale, to spike.
BASE = ["train.global_batch=27", "data.num_samples=54", "data.timesteps=100", f"train.steps={STEPS}",
        "logging.log_every=20", "train.drift_check_every=5", "model.layers[0].init_scale=40",
        "train.matmul_precision=highest", "logging.wandb.mode=disabled"]


def flat(tree) -> np.ndarray:
    if isinstance(tree, dict):
        return np.concatenate([flat(tree[k]) for k in sorted(tree)])
    return np.ravel(np.asarray(tree, dtype=np.float64))


def relative(a, b) -> float:
    return float(np.linalg.norm(flat(a) - flat(b)) / np.linalg.norm(flat(b)))


def run(runner, cfg):
    """First-step gradient, parameters after step 1, loss after STEPS steps."""
    from snndist.data.order import batch_indices

    t = cfg.train
    grads = runner.gradient(batch_indices(0, t.global_batch, runner.num_samples, t.seed))
    params, loss = None, None
    for step in range(STEPS):
        metrics = runner.step(batch_indices(step, t.global_batch, runner.num_samples, t.seed))
        loss = float(np.asarray(metrics["train/loss"]))
        if step == 0:
            params = runner.params()
    return grads, params, loss


def main() -> int:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # this process is the CPU reference and the coordinator
    import ray

    from snndist.config import load_config
    from snndist.dist.coordinator import RayRunner
    from snndist.train.local import LocalRunner

    fake = os.environ.get("SNNDIST_TEST_ACCELERATORS_ON_CPU") == "1"
    ray.init(address="local", num_cpus=4, **({"num_gpus": int(os.environ.get("GPUS", "2"))} if fake else {}),
             include_dashboard=False, logging_level="ERROR")
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if not gpus:
        print("no GPU in this Ray instance: nothing to check", file=sys.stderr)
        return 1
    reference_cfg = load_config("configs/tutorial.yaml", BASE)
    reference = run(LocalRunner(reference_cfg, devices=1), reference_cfg)
    topologies = [(1, 1, "xla")] + ([(1, gpus, "xla"), (2, gpus // 2, "xla"), (2, gpus // 2, "coordinator")]
                                    if gpus >= 2 else [])
    print(f"| workers x GPUs | sync | gradient | parameters | loss @{STEPS} | within tolerance |")
    print("|---|---|---:|---:|---:|---|")
    failed = 0
    for workers, devices, sync in topologies:
        cfg = load_config("configs/tutorial.yaml", BASE + [
            f"train.workers={workers}", f"cluster.devices_per_worker={devices}", f"train.grad_sync={sync}",
            "cluster.accelerator=gpu", "cluster.placement_strategy=PACK"])  # one machine: PACK, not one a node
        runner = RayRunner(cfg, f"gpu-topology-{workers}x{devices}-{sync}", say=lambda line: None)
        try:
            grads, params, loss = run(runner, cfg)
        finally:
            runner.close()
        errors = (relative(grads, reference[0]), relative(params, reference[1]),
                  abs(loss - reference[2]) / abs(reference[2]))
        ok = errors[0] < 1e-5 and errors[1] < 1e-5 and errors[2] < 1e-3
        failed += not ok
        print(f"| {workers} x {devices} | {sync} | {errors[0]:.1e} | {errors[1]:.1e} | {errors[2]:.1e} | "
              f"{'yes' if ok else 'NO'} |")
    ray.shutdown()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
