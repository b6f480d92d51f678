"""Waiting for the workers' resources: no limit on a cluster, short on the embedded local instance; what
a waiting run says, and what `snndist status` and `snndist jobs` read back from it (the jobs themselves,
on a real head: tests/test_jobs.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from snndist.config import ClusterConfig, load_config
from snndist.dist import cluster
from snndist.dist.job_reasons import failure_reason, waiting_reason

REPO = Path(__file__).resolve().parent.parent


def test_the_wait_is_unlimited_on_a_cluster_and_short_locally():
    assert cluster.resource_wait_s(ClusterConfig(), local=False) is None
    assert cluster.resource_wait_s(ClusterConfig(), local=True) == cluster.LOCAL_WAIT_S
    assert cluster.resource_wait_s(ClusterConfig(resource_timeout_s=7), local=False) == 7


def test_a_waiting_line_reads_back_as_the_reason_until_placed():
    line = cluster.waiting_line(2, {"CPU": 1, "GPU": 1}, "PACK", 95.4, {"CPU": 6.0}, {"CPU": 8.0, "GPU": 2.0},
                                asked=True)
    assert line == ("waiting for 2 x {CPU: 1, GPU: 1} (PACK), 6 CPU, 0 GPU free (6 of 8 CPU, 0 of 2 GPU), 95 s so "
                    "far; asked the autoscaler for them")
    one = cluster.waiting_line(2, {"GPU": 1}, "SPREAD", 5, {}, {"GPU": 1.0}, asked=False)
    assert waiting_reason(f"run directory: /r\n{one}\n") == "waiting for 2 x {GPU: 1}, 0 free"
    assert waiting_reason(f"{one}\nplaced 2 x {{GPU: 1}} after 40 s of waiting\nstep 10/100\n") is None
    assert waiting_reason(f"{line}\nplaced 2 x {{GPU: 1}} after 40 s\n{one}") == "waiting for 2 x {GPU: 1}, 0 free"
    assert waiting_reason("step 10/100 loss 0.5\n") is None


def test_a_failure_reads_back_as_snndists_line_else_the_exception():
    traceback = "Traceback (most recent call last):\n  File \"x.py\", line 1\nModuleNotFoundError: No module named 'x'\n"
    assert failure_reason(traceback) == "ModuleNotFoundError: No module named 'x'"
    ours = "snndist: error: data.path=/d: no such directory"
    assert failure_reason(f"step 1\n{ours}\n{traceback}") == ours
    assert failure_reason("Killed\n") is None


def test_an_autoscaler_is_told_from_a_read_only_cluster_by_its_node_types():
    report = {"autoscaler_report": {"node_type_mapping": {"ab12": "node_ab12"}}}
    assert not cluster.launches_nodes(report) and not cluster.launches_nodes({})
    report["autoscaler_report"]["node_type_mapping"]["cd34"] = "gpu_spot"  # a type of `ray up`'s config
    assert cluster.launches_nodes(report)


def test_the_local_instance_has_no_autoscaler_and_a_recovery_on_a_cluster_waits_until_placed(local_ray):
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    assert not cluster.has_autoscaler()
    cfg = load_config("configs/tutorial.yaml", ["train.workers=2"])
    like = cluster.Reservation(None, "cpu", {"CPU": 1}, 2, "PACK")
    blocker = placement_group([{"CPU": 4}])  # the whole instance, as another job would hold it
    assert blocker.wait(30)
    lines: list[str] = []
    threading.Timer(cluster.FIRST_REPORT_S + 2, remove_placement_group, [blocker]).start()
    began = time.monotonic()
    # Not elastic (min_workers unset): on a cluster the recovery waits with no limit.
    reservation = cluster.reserve_elastic(like, cfg.train, cfg.cluster, 2, local=False, say=lines.append)
    try:
        assert reservation.workers == 2 and time.monotonic() - began >= cluster.FIRST_REPORT_S + 2
        assert len(lines) == 2, lines
        assert lines[0].startswith("waiting for 2 x {CPU: 1} (PACK), 0 free (0 of 4 CPU), ")
        assert lines[0].endswith("no autoscaler to ask: waiting for other jobs to end")
        assert lines[1].startswith("placed 2 x {CPU: 1} after ")
        assert waiting_reason("\n".join(lines)) is None
    finally:
        cluster.release(reservation)
    deadline = time.monotonic() + 10  # a removed group's resources return a moment later
    while ray.available_resources().get("CPU") != 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ray.available_resources().get("CPU") == 4


def test_the_local_instance_still_refuses_at_once_what_it_cannot_hold(tmp_path):
    began = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "snndist", "train", "--config", "configs/tutorial.yaml",
                             "--set", "train.workers=64", "--run-dir", str(tmp_path / "run")], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and time.monotonic() - began < 60
    errors = result.stderr.strip().splitlines()
    assert errors == [f"snndist: error: train.workers=64 x cluster.cpus_per_worker=1 needs 64 CPU; the cluster "
                      f"has {os.cpu_count()} and no autoscaler to add more"], result.stderr
