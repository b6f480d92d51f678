"""Real Ray nodes on this machine: a head and worker nodes of one CPU each, every worker node in a mount
namespace of its own where the directory ``node-local`` is a fresh tmpfs (a run directory under it is
node-local, one beside it shared).

- A node-local run directory is refused before anything is written.
- Elastic training: one node killed mid-run as a machine is lost (no drain notice). With
  ``train.min_workers=2`` the run goes on with 2 workers from its last checkpoint, grows back to 3 when a
  new node joins, and must end with the loss of the reference: a run with ``train.min_workers=3`` that stops
  after ``cluster.resource_timeout_s`` with one line and its checkpoint intact, resumed from that checkpoint
  (the same step, the same state) with 2 workers.
- A node drained as a cloud preemption drains it (``ray drain-node``, reason PREEMPTION): the run checkpoints
  and exits 75.

The tests share one cluster (three nodes at the start): the elastic runs lose two nodes and add one; the
drain test runs one worker on each node still alive.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from raynodes import VENV_BIN, Node, ray_env, remove, start_head, start_worker_node, wait_for_nodes

REPO = Path(__file__).resolve().parent.parent
EXIT_PREEMPTED = 75
TIMEOUT_S = 3  # cluster.resource_timeout_s: how long the lost worker's resources are waited for
STEPS, EVERY, KILL_AT = 60, 20, 25  # the node is killed after step KILL_AT: the restore is from step 20
RUN = ["train.workers=3", "cluster.placement_strategy=SPREAD", f"cluster.resource_timeout_s={TIMEOUT_S}",
       f"train.steps={STEPS}", f"checkpoint.every_steps={EVERY}", "logging.log_every=5", "train.global_batch=96",
       "logging.wandb.mode=disabled"]


@dataclass
class Stopped:
    code: int
    out: str
    after_s: float  # since the node was lost
    checkpoints: list[int]


@dataclass
class Cluster:
    head: Node
    head_id: str
    env: dict
    base: Path  # seen alike by every node
    local: Path  # each worker node sees a tmpfs of its own here
    workers: list = field(default_factory=list)  # the nodes besides the head, the newest last
    ids: list = field(default_factory=list)  # their Ray node ids, in the same order

    def add_node(self) -> Node:
        node = start_worker_node(self.head, self.env, self.base / f"node{len(self.workers)}.log", num_cpus=1,
                                 wrap=_private_tmpfs(self.local))
        known = {self.head_id, *self.ids}
        self.workers.append(node)
        while not (new := set(wait_for_nodes([self.head, *self.alive()])) - known):  # a lost node may linger
            time.sleep(0.2)
        self.ids.append(new.pop())
        return node

    def alive(self) -> list[Node]:
        return [n for n in self.workers if n.proc.poll() is None]


def _private_tmpfs(directory: Path):
    """``ray start`` in a mount namespace of its own, with ``directory`` an empty tmpfs there."""
    unshare = (["unshare", "--mount", "--propagation", "private"] if os.geteuid() == 0
               else ["unshare", "--user", "--map-root-user", "--mount"])
    mount = f"mount -t tmpfs snndist-node-local {shlex.quote(str(directory))}"
    return lambda cmd: [*unshare, "sh", "-c", f"{mount} && exec {shlex.join(cmd)}"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("multinode")
    local = base / "node-local"
    local.mkdir()
    # A lost node is declared dead after 3 missed health checks of 0.5 s, not Ray's 5 of 3 s.
    env = ray_env(RAY_AUTH_MODE="disabled", RAY_health_check_period_ms="500", RAY_health_check_failure_threshold="3",
                  RAY_health_check_initial_delay_ms="1000")
    head, temp_dir = start_head(env, num_cpus=1)
    c = None
    try:
        c = Cluster(head, wait_for_nodes([head])[0], env, base, local)
        for _ in range(2):  # one at a time: nodes starting together on one machine can collide
            c.add_node()
        yield c
    finally:
        for node in [*(c.workers if c else []), head]:
            node.stop()
        remove(temp_dir)


def _train(cluster: Cluster, run_dir: Path, *sets: str, resume: bool = False) -> tuple[subprocess.Popen, Path]:
    log = run_dir.parent / f"{run_dir.name}.log"
    source = ["--resume", str(run_dir)] if resume else ["--config", "configs/tutorial.yaml", "--run-dir", str(run_dir)]
    args = [sys.executable, "-m", "snndist", "train", *source, "--address", cluster.head.gcs_address,
            *(a for s in sets for a in ("--set", s))]
    with open(log, "w") as out:
        return subprocess.Popen(args, cwd=REPO, env=cluster.env, stdout=out, stderr=subprocess.STDOUT, text=True), log


def _rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().split("\n")[:-1] if path.exists() else []  # a line being written has no newline yet
    return [json.loads(l) for l in lines]


def _wait_for(proc: subprocess.Popen, log: Path, done, what: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before {what}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s:\n{log.read_text()}"
        time.sleep(0.05)


def _kill_a_node_after(cluster: Cluster, proc, log: Path, run_dir: Path, step: int) -> float:
    _wait_for(proc, log, lambda: any(r["step"] >= step for r in _rows(run_dir)), f"step {step}")
    cluster.alive()[-1].kill()
    return time.monotonic()


def _checkpoints(run_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


def test_node_local_run_dir_refused_at_start(cluster):
    run_dir = cluster.local / "run"
    # Two workers on two of the three nodes: at least one on a worker node, which sees its own tmpfs there.
    proc, log = _train(cluster, run_dir, "train.workers=2", "cluster.placement_strategy=STRICT_SPREAD",
                       "logging.wandb.mode=disabled", "train.steps=50")
    proc.wait(timeout=240)
    out = log.read_text()
    assert proc.returncode == 2, out
    errors = [l for l in out.splitlines() if l.startswith("snndist: error:")]
    assert len(errors) == 1 and "Traceback" not in out, out
    assert re.fullmatch(rf"snndist: error: run directory {re.escape(str(run_dir))} is not visible from "
                        r"worker [01]'s node: on a multi-node cluster it must be on a shared filesystem.*", errors[0])
    # Refused before anything was written: no config, no checkpoint, no metrics, no marker, no lease left
    # (the lease's lock file stays: removing it could let two runs lock two different files).
    assert [p.name for p in run_dir.iterdir()] == [".snndist-lease.lock"]
    assert "step 1" not in out


@pytest.fixture(scope="module")
def elastic(cluster):
    """min_workers=2: a node lost, the run goes on with 2 workers; a new node joins, it grows back to 3."""
    run_dir = cluster.base / "elastic"
    proc, log = _train(cluster, run_dir, *RUN, "train.min_workers=2")
    _kill_a_node_after(cluster, proc, log, run_dir, KILL_AT)
    _wait_for(proc, log, lambda: "going on with 2 of" in log.read_text(), "shrinking to 2 workers")
    # The capacity returns while the run is at 2 workers: held still while a node starts (seconds on a busy
    # machine, against a fraction of one for 20 steps), it grows back at the first checkpoint after.
    proc.send_signal(signal.SIGSTOP)
    try:
        cluster.add_node()
    finally:
        proc.send_signal(signal.SIGCONT)
    proc.wait(timeout=180)
    return run_dir, proc.returncode, log.read_text()


@pytest.fixture(scope="module")
def strict(cluster, elastic):
    """min_workers=3 (the default): a node lost, the run stops; resumed on what is left, with 2 workers."""
    run_dir = cluster.base / "strict"
    proc, log = _train(cluster, run_dir, *RUN)
    killed = _kill_a_node_after(cluster, proc, log, run_dir, KILL_AT)
    proc.wait(timeout=120)
    stopped = Stopped(proc.returncode, log.read_text(), time.monotonic() - killed, _checkpoints(run_dir))
    resumed, resumed_log = _train(cluster, run_dir, "train.workers=2", resume=True)
    resumed.wait(timeout=180)
    return run_dir, stopped, resumed.returncode, resumed_log.read_text()


def test_too_few_workers_stops_within_the_timeout_with_the_checkpoint_intact(strict):
    run_dir, stopped, resumed_code, resumed_out = strict
    assert stopped.code == 1, stopped.out
    errors = [l for l in stopped.out.splitlines() if l.startswith("snndist: error:")]
    # Ray forwards the surviving workers' stderr as they are ended ("(Worker pid=...)"); snndist's own is one line.
    tracebacks = [l for l in stopped.out.splitlines() if "Traceback" in l and "pid=" not in l]
    assert len(errors) == 1 and not tracebacks, stopped.out
    assert re.fullmatch(
        rf"snndist: error: waited cluster.resource_timeout_s={TIMEOUT_S} s for the resources of 3 workers x "
        r"\{CPU: 1\} \(SPREAD\) to come back, and fewer than train.min_workers=3 can be placed; the checkpoint "
        rf"of step {EVERY} is intact, continue with --resume", errors[0]), errors[0]
    assert stopped.after_s < TIMEOUT_S + 30, f"stopped {stopped.after_s:.0f} s after the node was lost"
    assert stopped.checkpoints == [EVERY]
    # The checkpoint resumes, on the two nodes left.
    assert resumed_code == 0, resumed_out
    assert f"resumed at step {EVERY}" in resumed_out and "2 worker(s) x 1 cpu device(s)" in resumed_out


def test_fewer_workers_go_on_with_the_same_global_batch_and_grow_back(elastic, strict):
    run_dir, code, out = elastic
    assert code == 0, out
    assert re.search(rf"recovered: rank \d, cause: .*; restored step {EVERY}, replaying \d+ step\(s\)", out), out
    assert "going on with 2 of train.workers=3 workers (train.min_workers=2), the same global batch" in out
    grown = re.search(r"grew from 2 to 3 workers at step (\d+)", out)
    assert grown and int(grown.group(1)) == 2 * EVERY, out  # the first checkpoint after the node joined
    workers = [int(r["system/workers"]) for r in _rows(run_dir) if "system/workers" in r]
    changes = [w for i, w in enumerate(workers) if i == 0 or w != workers[i - 1]]
    assert changes == [3, 2, 3], workers
    # The reference: the strict run, resumed from the same step-20 checkpoint (both runs were the same 3 workers
    # up to there) with 2 workers to the end. The same global batch, the same loss, to float rounding.
    ours = json.loads((run_dir / "summary.json").read_text())
    reference = json.loads((strict[0] / "summary.json").read_text())
    assert ours["step"] == reference["step"] == STEPS
    assert abs(ours["train/loss"] - reference["train/loss"]) < 1e-5, (ours, reference)


def test_drain_notice_checkpoints_and_exits(cluster):
    """One worker per node; the newest worker node drained: the step in flight, a committed checkpoint, exit 75."""
    alive = [node_id for node, node_id in zip(cluster.workers, cluster.ids) if node.proc.poll() is None]
    nodes, drained = 1 + len(alive), alive[-1]
    run_dir = cluster.base / "drained"
    proc, log = _train(cluster, run_dir, f"train.workers={nodes}", "cluster.placement_strategy=SPREAD",
                       "train.steps=100000", "checkpoint.every_steps=100000", "logging.log_every=10",
                       "logging.wandb.mode=disabled")
    _wait_for(proc, log, lambda: len(_rows(run_dir)) >= 3, "30 steps on every node", timeout_s=240)
    drain = subprocess.run([str(VENV_BIN / "ray"), "drain-node", "--address", cluster.head.gcs_address,
                            "--node-id", drained, "--reason", "DRAIN_NODE_REASON_PREEMPTION",
                            "--reason-message", "test preemption", "--deadline-remaining-seconds", "120"],
                           env=cluster.env, capture_output=True, text=True, timeout=60)
    assert drain.returncode == 0, drain.stderr
    assert proc.wait(timeout=120) == EXIT_PREEMPTED, log.read_text()
    match = re.search(rf"stopped by Ray's drain notice for node {drained}, \d+ s before it goes "
                      r"at step (\d+); checkpoint committed", log.read_text())
    assert match, log.read_text()
    stopped_at = int(match.group(1))
    assert stopped_at >= 30
    assert _checkpoints(run_dir) == [stopped_at]  # the only save: periodic ones are out of reach
    # What --resume does with it is the strict run's resume above (and test_checkpoint's, after SIGTERM).
