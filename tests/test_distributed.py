"""Distributed training on a real local Ray instance: topology does not change the result."""
import time

import numpy as np
import pytest
import ray

from snndist.config import load_config
from snndist.dist.coordinator import RayRunner
from snndist.data.order import batch_indices
from snndist.errors import ClusterError, WorkerError, WorkerLost
from snndist.train.local import LocalRunner

# 27 samples: uneven over 2 workers (14 + 13) and over 4 devices (7, 7, 7, 6).
# A larger input scale than the tutorial's, so that neurons spike from step 1.
BASE = ["train.global_batch=27", "data.num_samples=54", "data.timesteps=100", "train.steps=20",
        "logging.log_every=20", "train.drift_check_every=5", "model.layers[0].init_scale=40"]
STEPS = 20


def _rel(a: dict, b: dict) -> float:
    fa = np.concatenate([np.ravel(x) for x in _leaves(a)])
    fb = np.concatenate([np.ravel(x) for x in _leaves(b)])
    return float(np.linalg.norm(fa - fb) / np.linalg.norm(fb))


def _leaves(tree):
    if isinstance(tree, dict):
        return [leaf for k in sorted(tree) for leaf in _leaves(tree[k])]
    return [np.asarray(tree)]


def _run(runner, cfg):
    """First-step gradient, parameters after step 1, loss at step 20."""
    first = batch_indices(0, cfg.train.global_batch, runner.num_samples, cfg.train.seed)
    grads = runner.gradient(first)
    losses = []
    for step in range(STEPS):
        metrics = runner.step(batch_indices(step, cfg.train.global_batch, runner.num_samples, cfg.train.seed))
        losses.append(float(np.asarray(metrics["train/loss"])))
        assert float(np.asarray(metrics["spikes/rate_hz/hidden0"])) > 1.0, "the check needs spikes"
        if step == 0:
            params = runner.params()
    return grads, params, losses


@pytest.fixture(scope="module")
def reference():
    cfg = load_config("configs/tutorial.yaml", BASE)
    return _run(LocalRunner(cfg, devices=1), cfg)


def test_local_runner_on_four_devices_matches_one(reference):
    cfg = load_config("configs/tutorial.yaml", BASE)
    grads, params, losses = _run(LocalRunner(cfg, devices=4), cfg)
    assert _rel(grads, reference[0]) < 1e-5 and _rel(params, reference[1]) < 1e-5
    assert losses[-1] == pytest.approx(reference[2][-1], rel=1e-3)


@pytest.mark.parametrize("sync", ["coordinator", "xla"])
@pytest.mark.parametrize("workers,devices", [(1, 1), (1, 4), (2, 1), (2, 2)])
def test_topology_does_not_change_the_result(local_ray, reference, sync, workers, devices):
    cfg = load_config("configs/tutorial.yaml", BASE + [
        f"train.grad_sync={sync}", f"train.workers={workers}", f"cluster.devices_per_worker={devices}"])
    runner = RayRunner(cfg, f"topo-{sync}-{workers}x{devices}", say=lambda _: None)
    try:
        assert runner.local_devices == devices
        grads, params, losses = _run(runner, cfg)
        if sync == "coordinator":
            runner.check_replicas()
    finally:
        runner.close()
    ref_grads, ref_params, ref_losses = reference
    assert _rel(grads, ref_grads) < 1e-5, "first-step gradient"
    assert _rel(params, ref_params) < 1e-5, "parameters after step 1"
    assert losses[0] == pytest.approx(ref_losses[0], rel=1e-5)
    assert losses[-1] == pytest.approx(ref_losses[-1], rel=1e-3), "loss after 20 steps"


def test_worker_error_names_rank_and_message(local_ray):
    # Sample indices past the dataset's end make the workers' loader raise.
    cfg = load_config("configs/tutorial.yaml", BASE + ["train.workers=2"])
    runner = RayRunner(cfg, "fails", say=lambda _: None)
    try:
        with pytest.raises(WorkerError, match=r"worker [01] failed: IndexError: sample index 10\d\d out of range \[0, 54\)"):
            runner.step(np.arange(1000, 1027))
    finally:
        runner.close()


def test_too_many_workers_is_a_clear_error(local_ray):
    cfg = load_config("configs/tutorial.yaml", BASE + ["train.workers=3", "cluster.cpus_per_worker=2"])
    with pytest.raises(ClusterError, match=r"train.workers=3 x cluster.cpus_per_worker=2 needs 6 CPU; "
                                           r"the cluster has 4"):
        RayRunner(cfg, "too-big", say=lambda _: None)
    cfg = load_config("configs/tutorial.yaml", BASE + ["train.workers=2", "cluster.cpus_per_worker=2",
                                                       "cluster.placement_strategy=STRICT_SPREAD",
                                                       "cluster.resource_timeout_s=3"])
    with pytest.raises(ClusterError, match="could not be placed within cluster.resource_timeout_s=3"):
        RayRunner(cfg, "one-node", say=lambda _: None)
    assert ray.available_resources().get("CPU") == 4, "a failed start must release what it reserved"


def test_a_step_past_its_timeout_is_an_error(local_ray):
    # The first step compiles, which takes far longer than 0.05 s.
    cfg = load_config("configs/tutorial.yaml", BASE + ["train.workers=2", "train.step_timeout_s=0.05"])
    runner = RayRunner(cfg, "slow", say=lambda _: None)
    try:
        with pytest.raises(WorkerLost, match=r"no answer within 0.05 s"):
            runner.step(np.arange(27))
    finally:
        runner.close()


def test_a_dead_peer_does_not_hang_the_xla_group(local_ray):
    cfg = load_config("configs/tutorial.yaml", BASE + ["train.workers=2", "train.grad_sync=xla",
                                                       "train.step_timeout_s=60"])
    runner = RayRunner(cfg, "dead-peer", say=lambda _: None)
    try:
        runner.step(np.arange(27))
        ray.kill(runner.workers[1])
        began = time.monotonic()
        with pytest.raises(WorkerLost, match="worker 1 lost"):
            runner.step(np.arange(27))
    finally:
        runner.close()
    assert time.monotonic() - began < 90, "close() must give up on the survivor's collective"
