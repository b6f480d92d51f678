"""Two real Ray nodes on this machine, the second in a mount namespace of its
own where the directory ``node-local`` is a fresh tmpfs: a run directory
under it is node-local (the second node sees another, empty directory), one
beside it is shared. The second node is then drained as a cloud preemption
would drain it (``ray drain-node``, reason PREEMPTION).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from raynodes import VENV_BIN, Node, ray_env, remove, start_head, start_worker_node, wait_for_nodes

REPO = Path(__file__).resolve().parent.parent
EXIT_PREEMPTED = 75


@dataclass
class TwoNodes:
    head: Node
    env: dict
    base: Path  # seen alike by both nodes
    local: Path  # the second node sees a tmpfs of its own here
    second_id: str


def _private_tmpfs(directory: Path):
    """``ray start`` in a mount namespace of its own, with ``directory`` an empty tmpfs there."""
    unshare = (["unshare", "--mount", "--propagation", "private"] if os.geteuid() == 0
               else ["unshare", "--user", "--map-root-user", "--mount"])
    mount = f"mount -t tmpfs snndist-node-local {shlex.quote(str(directory))}"
    return lambda cmd: [*unshare, "sh", "-c", f"{mount} && exec {shlex.join(cmd)}"]


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    base = tmp_path_factory.mktemp("multinode")
    local = base / "node-local"
    local.mkdir()
    env = ray_env(RAY_AUTH_MODE="disabled")
    head, temp_dir = start_head(env)
    second = None
    try:
        head_id = wait_for_nodes([head])[0]
        second = start_worker_node(head, env, base / "second-node.log", resources='{"second": 1}',
                                   wrap=_private_tmpfs(local))
        second_id = (set(wait_for_nodes([head, second])) - {head_id}).pop()
        yield TwoNodes(head, env, base, local, second_id)
    finally:
        if second is not None:
            second.stop()
        head.stop()
        remove(temp_dir)


def _train(two_nodes: TwoNodes, run_dir: Path, *extra: str) -> subprocess.Popen:
    """A 2-worker run, one worker on each node, coordinator in this machine's (the head's) namespace."""
    args = [sys.executable, "-m", "snndist", "train", "--config", "configs/tutorial.yaml",
            "--address", two_nodes.head.gcs_address, "--run-dir", str(run_dir),
            "--set", "train.workers=2", "--set", "cluster.placement_strategy=STRICT_SPREAD",
            "--set", "logging.wandb.mode=disabled", "--set", "logging.log_every=10", *extra]
    return subprocess.Popen(args, cwd=REPO, env=two_nodes.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_node_local_run_dir_refused_at_start(two_nodes):
    run_dir = two_nodes.local / "run"
    proc = _train(two_nodes, run_dir, "--set", "train.steps=50")
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 2, f"exit {proc.returncode}\n{out}\n{err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out + err, err
    assert re.fullmatch(rf"snndist: error: run directory {re.escape(str(run_dir))} is not visible from "
                        r"worker [01]'s node: on a multi-node cluster it must be on a shared filesystem.*", lines[0])
    # Refused before anything was written: no config, no checkpoint, no metrics, no marker, no lease left
    # (the lease's lock file stays: removing it could let two runs lock two different files).
    assert [p.name for p in run_dir.iterdir()] == [".snndist-lease.lock"]
    assert "step 1" not in out


def test_drain_notice_checkpoints_and_exits_then_resumes(two_nodes):
    run_dir = two_nodes.base / "shared-run"
    proc = _train(two_nodes, run_dir, "--set", "train.steps=100000", "--set", "checkpoint.every_steps=100000")
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3):  # 30 steps trained on both nodes
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no training progress within 240 s"
        time.sleep(0.2)
    drain = subprocess.run([str(VENV_BIN / "ray"), "drain-node", "--address", two_nodes.head.gcs_address,
                            "--node-id", two_nodes.second_id, "--reason", "DRAIN_NODE_REASON_PREEMPTION",
                            "--reason-message", "test preemption", "--deadline-remaining-seconds", "120"],
                           env=two_nodes.env, capture_output=True, text=True, timeout=60)
    assert drain.returncode == 0, drain.stderr
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, f"exit {proc.returncode}\n{out}\n{err}"
    match = re.search(rf"stopped by Ray's drain notice for node {two_nodes.second_id}, \d+ s before it goes "
                      r"at step (\d+); checkpoint committed", err)
    assert match, err
    stopped_at = int(match.group(1))
    assert stopped_at >= 30
    saved = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [stopped_at]  # the only save: periodic ones are out of reach
    # The drained node is left for the cloud to take; its worker is gone, so Ray shuts it down.
    # The run resumes where it stopped (on the head alone: one worker).
    resumed = subprocess.run(
        [sys.executable, "-m", "snndist", "train", "--resume", str(run_dir), "--address", two_nodes.head.gcs_address,
         "--set", f"train.steps={stopped_at + 20}", "--set", "train.workers=1"],
        cwd=REPO, env=two_nodes.env, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at step {stopped_at}" in resumed.stdout + resumed.stderr
