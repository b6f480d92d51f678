"""Distributed training on a real local Ray instance: topology does not change the result."""
import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import ray

from snndist.config import load_config
from snndist.dist.cluster import check_group, local_gpu_ids, worker_env
from snndist.dist.coordinator import RayRunner
from snndist.dist.worker import use_environment
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
    """First-step gradient, parameters after step 1, losses of steps 1-20 (after the first, in calls of
    several steps)."""
    batches = [batch_indices(step, cfg.train.global_batch, runner.num_samples, cfg.train.seed)
               for step in range(STEPS)]
    grads = runner.gradient(batches[0])
    metrics = [runner.step(batches[0], upcoming=batches[1])]
    params = runner.params()
    metrics += runner.steps(batches[1:8], upcoming=batches[8]) + runner.steps(batches[8:])
    assert len(metrics) == STEPS
    assert all(float(np.asarray(m["spikes/rate_hz/hidden0"])) > 1.0 for m in metrics), "the check needs spikes"
    return grads, params, [float(np.asarray(m["train/loss"])) for m in metrics]


@pytest.fixture(scope="module")
def reference():
    cfg = load_config("configs/tutorial.yaml", BASE)
    return _run(LocalRunner(cfg, devices=1), cfg)


def test_local_runner_on_four_devices_matches_one(reference):
    cfg = load_config("configs/tutorial.yaml", BASE)
    grads, params, losses = _run(LocalRunner(cfg, devices=4), cfg)
    assert _rel(grads, reference[0]) < 1e-5 and _rel(params, reference[1]) < 1e-5
    assert losses[-1] == pytest.approx(reference[2][-1], rel=1e-3)


# One worker steps alike under both syncs (nothing to average): coordinator sync with one worker is not run.
@pytest.mark.parametrize("sync,workers,devices", [("xla", 1, 1), ("xla", 1, 4), ("xla", 2, 1), ("xla", 2, 2),
                                                  ("coordinator", 2, 1), ("coordinator", 2, 2)])
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


def test_the_drivers_jax_stays_on_the_host_whatever_the_shell_says():
    # JAX reads JAX_PLATFORMS when it is imported: after `snndist train` (no --local) has begun, the
    # driver's JAX must be on the CPU even with JAX_PLATFORMS=cuda in the shell (here, without CUDA, JAX
    # would fail; on a GPU head it would take 75% of the first GPU). A bad field ends the command early.
    code = ("from snndist import cli\n"
            "assert cli.main(['train', '--config', 'configs/tutorial.yaml', '--set', 'train.steps=0']) == 2\n"
            "import jax\n"
            "print(jax.devices()[0].platform)")
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "JAX_PLATFORMS": "cuda"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "cpu", result.stderr


def test_a_group_that_did_not_form_is_one_line():
    check_group(rank=1, workers=2, devices_per_worker=2, processes=2, devices=4)  # as planned
    with pytest.raises(ClusterError) as err:  # each worker alone: one process, its own devices
        check_group(rank=1, workers=2, devices_per_worker=2, processes=1, devices=2)
    assert str(err.value) == ("worker 1: the jax.distributed group did not form as planned: JAX sees 1 "
                              "process(es) with 2 device(s) in all, the run planned 2 worker(s) x 2 device(s) "
                              "(cluster.devices_per_worker)")


def test_cluster_env_reaches_the_workers_environment_under_snndists_own():
    user = {"NCCL_DEBUG": "INFO", "XLA_FLAGS": "--xla_dump_to=/tmp/x"}
    assert worker_env("cpu", 2, user) == {
        "NCCL_DEBUG": "INFO", "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_dump_to=/tmp/x --xla_force_host_platform_device_count=2"}
    assert worker_env("gpu", 4, user) == {**user, "JAX_PLATFORMS": "cuda"}
    assert worker_env("tpu", 4) == {"JAX_PLATFORMS": "tpu"}
    assert worker_env("gpu", 4, user, deterministic=True)["XLA_FLAGS"] == (
        "--xla_dump_to=/tmp/x --xla_gpu_deterministic_ops=true")
    assert "XLA_FLAGS" not in worker_env("tpu", 4, deterministic=True)  # a GPU flag: CPUs are deterministic already


def test_a_worker_sets_its_environment_before_jax_and_the_users_is_there_from_its_start(local_ray):
    # The shared instance's processes inherited 4 host devices (conftest): the worker's own 2 must win.
    cfg = load_config("configs/tutorial.yaml", BASE + ["cluster.devices_per_worker=2",
                                                       "cluster.env={SNNDIST_TEST_MARK: marked}"])
    runner = RayRunner(cfg, "environment", say=lambda _: None)
    try:
        assert runner.local_devices == 2
        env = ray.get(runner.workers[0].__ray_call__.remote(lambda worker: dict(os.environ)))
        assert env["JAX_PLATFORMS"] == "cpu" and env["SNNDIST_TEST_MARK"] == "marked"
        assert env["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2",
                                            "--xla_cpu_copy_insertion_use_region_analysis=true"]
        # What the process started with (a library path must be there before Python starts).
        with open(f"/proc/{runner.worker_pids()[0]}/environ", "rb") as start:
            assert b"SNNDIST_TEST_MARK=marked" in start.read().split(b"\0")
    finally:
        runner.close()
    with pytest.raises(RuntimeError, match="imported JAX before its environment was set"):
        use_environment({})  # this process's JAX started long ago


def test_a_gpu_workers_local_device_ids_follow_what_ray_made_visible():
    # Ray set CUDA_VISIBLE_DEVICES=5,7 for GPUs 5 and 7: JAX numbers them 0 and 1.
    assert local_gpu_ids(2, ["5", "7"], {"CUDA_VISIBLE_DEVICES": "5,7"}) == [0, 1]
    # Told not to, Ray leaves every GPU of the node visible: JAX's ids are the node's.
    assert local_gpu_ids(2, ["7", "5"], {"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}) == [5, 7]
    assert local_gpu_ids(1, [3], {"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "0"}) == [0]


def test_the_deterministic_gpu_flag_is_one_this_xla_knows():
    """XLA stops at startup on an unknown flag in XLA_FLAGS: a misspelt one would stop every GPU worker."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": worker_env("gpu", 1, deterministic=True)["XLA_FLAGS"]}
    done = subprocess.run([sys.executable, "-c", "import jax; print(float(jax.numpy.ones(2).sum()))"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "2.0", done.stderr[-2000:]
    env["XLA_FLAGS"] = "--xla_gpu_deterministic_opz=true"  # the check can fail
    assert subprocess.run([sys.executable, "-c", "import jax; jax.numpy.ones(2).sum()"], env=env,
                          capture_output=True, timeout=120).returncode != 0


@ray.remote
class _Peer:
    def step(self, fail: bool = False, die: bool = False):
        if die:  # the process ends mid-call, as a killed peer's does (ray.kill may still let a call run)
            os._exit(1)
        if fail:
            raise RuntimeError("Gloo all-reduce failed: Connection reset by peer")
        return 1


def test_a_workers_error_with_a_dead_peer_is_the_peers_loss(local_ray):
    # A peer killed mid-collective fails the survivor's all-reduce first; the failure must read as the
    # peer's loss (recovered from checkpoints), not as the survivor's bug (which stops the run).
    from snndist.dist.coordinator import _lost_among

    dead, alive, failing = _Peer.remote(), _Peer.remote(), _Peer.remote()
    ray.get([dead.step.remote(), alive.step.remote()])
    refs = [dead.step.remote(die=True), alive.step.remote(), failing.step.remote(True)]
    lost = _lost_among(list(refs), {ref: rank for rank, ref in enumerate(refs)}, grace_s=30)
    assert isinstance(lost, WorkerLost) and lost.rank == 0 and "ActorDiedError" in str(lost)
    healthy = [alive.step.remote(), failing.step.remote(True)]
    assert _lost_among(healthy, {ref: rank for rank, ref in enumerate(healthy)}, grace_s=30) is None


def test_a_taken_coordinator_port_starts_the_group_again_and_old_workers_are_dead_first(local_ray):
    """The jax.distributed coordinator's port taken when the group joins (by the test here; on a cluster by
    anything, between worker 0 finding it free and JAX binding it): the group is ended and started again on
    a free port, at the start and in a recovery; ended workers are dead before anything new is placed."""
    from ray._private.state import actors

    with socket.socket() as held:
        held.bind(("", 0))
        held.listen()
        port = held.getsockname()[1]
        cfg = load_config("configs/tutorial.yaml", BASE + ["train.workers=2", "train.grad_sync=xla",
                                                           f"cluster.coordinator_port={port}"])
        lines: list[str] = []
        runner = RayRunner(cfg, "port", say=lines.append)
        try:
            again = [l for l in lines if "starting the worker group again, on a free port" in l]
            # Worker 0 fails to bind: JAX raises ("Failed to start RPC server"), or gRPC crashes its process.
            assert len(again) == 1 and re.match(rf"(worker 0 could not join the jax.distributed group at [\d.]+:"
                                                rf"{port}: .*RPC server|worker 0 lost: )", again[0]), lines
            before = float(runner.step(np.arange(27))["train/loss"])
            old = [w._actor_id.hex() for w in runner.workers]
            runner._end_actors()  # what restart() does (through _stop_workers) before it reserves again
            assert [actors(a)["State"] for a in old] == ["DEAD", "DEAD"]
            runner.restart()  # the recovery's group meets the taken port too (its next call waits for it)
            after = float(runner.step(np.arange(27))["train/loss"])
            assert len([l for l in lines if "starting the worker group again" in l]) == 2, lines
            assert np.isfinite(before) and np.isfinite(after)
        finally:
            runner.close()
