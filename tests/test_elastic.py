"""Elastic training on real Ray nodes: three nodes of one CPU each on this machine, one worker per node
(SPREAD), one node killed mid-run as a machine is lost (no drain notice).

With ``train.min_workers=2`` the run goes on with 2 workers from its last checkpoint, grows back to 3
when a new node joins, and must end with the loss of the reference: a run with ``train.min_workers=3``
that stops after ``cluster.resource_timeout_s`` with one line and its checkpoint intact, resumed from that
checkpoint (the same step, the same state) with 2 workers.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from raynodes import Node, ray_env, remove, start_head, start_worker_node, wait_for_nodes

REPO = Path(__file__).resolve().parent.parent
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
    env: dict
    base: Path
    workers: list  # the nodes besides the head, the newest last

    def add_node(self) -> Node:
        node = start_worker_node(self.head, self.env, self.base / f"node{len(self.workers)}.log", num_cpus=1)
        self.workers.append(node)
        wait_for_nodes([self.head, *self.alive()])
        return node

    def alive(self) -> list[Node]:
        return [n for n in self.workers if n.proc.poll() is None]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("elastic")
    # A lost node is declared dead after 3 missed health checks of 0.5 s, not Ray's 5 of 3 s.
    env = ray_env(RAY_AUTH_MODE="disabled", RAY_health_check_period_ms="500", RAY_health_check_failure_threshold="3",
                  RAY_health_check_initial_delay_ms="1000")
    head, temp_dir = start_head(env, num_cpus=1)
    c = Cluster(head, env, base, [])
    try:
        wait_for_nodes([head])
        for _ in range(2):  # one at a time: nodes starting together on one machine can collide
            c.add_node()
        yield c
    finally:
        for node in [*c.workers, head]:
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
        rf"snndist: error: waited cluster.resource_timeout_s={TIMEOUT_S} s for the resources of 3 workers of "
        r"\{'CPU': 1\} \(SPREAD\) to come back, and fewer than train.min_workers=3 can be placed; the checkpoint "
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
