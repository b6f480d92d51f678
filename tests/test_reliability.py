"""Runs that are hard to break: one owner per run directory, an embedded Ray that ends with its driver,
out-of-memory and a full disk said in one line. Real processes through the CLI."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from snndist.errors import RunDirInUse, RunFailed
from snndist.store.lease import LEASE, RunLease

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "snndist"]
QUIET = ["--set", "logging.wandb.mode=disabled"]


def _start(run: Path, steps: int) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "train", "--config", "configs/tutorial.yaml", "--local", "--run-dir", str(run),
                             "--set", f"train.steps={steps}", "--set", "logging.log_every=50",
                             "--set", "checkpoint.every_steps=100", *QUIET],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_step(proc: subprocess.Popen, prefix: str = "step 200/") -> list[str]:
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(prefix):
            return lines
    raise AssertionError("".join(lines) + proc.stderr.read())


def test_a_second_coordinator_is_refused_and_the_first_finishes_untouched(tmp_path):
    run = tmp_path / "run"
    first = _start(run, 1500)
    _wait_for_step(first)
    second = subprocess.run([*CLI, "train", "--resume", str(run), "--local", *QUIET], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stdout + second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        rf"snndist: error: run directory {re.escape(str(run))} is in use by snndist \(host {socket.gethostname()}, "
        rf"pid {first.pid}, since [-0-9: ]+; last heartbeat \d+ s ago\); stop that run first", lines[0]), lines
    assert first.wait(timeout=300) == 0, first.stderr.read()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "train/loss" in line]
    assert steps == list(range(50, 1501, 50)), "one writer: every logged step once"
    assert not (run / LEASE).exists(), "released at the end"


def test_a_killed_coordinators_lease_is_taken_over(tmp_path):
    run = tmp_path / "run"
    first = _start(run, 100000)
    _wait_for_step(first)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert json.loads((run / LEASE).read_text())["pid"] == first.pid, "SIGKILL left the lease behind"
    resumed = subprocess.run([*CLI, "train", "--resume", str(run), "--local", "--set", "train.steps=300", *QUIET],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    took = [l for l in resumed.stdout.splitlines() if l.startswith("warning: took over the lease")]
    assert len(took) == 1 and f"pid {first.pid}" in took[0], resumed.stdout


def _foreign(run: Path, heartbeat_age_s: float) -> None:
    run.mkdir(exist_ok=True)
    (run / LEASE).write_text(json.dumps({"host": "another-host", "pid": 4242, "since": time.time() - 3600,
                                         "heartbeat": time.time() - heartbeat_age_s, "job_id": "raysubmit_x"}))


def test_a_lease_held_on_another_host_counts_until_its_heartbeat_is_stale(tmp_path):
    run = tmp_path / "run"
    _foreign(run, heartbeat_age_s=5)
    with pytest.raises(RunDirInUse, match=r"in use by snndist \(host another-host, pid 4242, Ray job raysubmit_x, "
                                          r"since .*; last heartbeat 5 s ago\)"):
        RunLease(run, timeout_s=60).acquire()
    _foreign(run, heartbeat_age_s=120)
    said = []
    with RunLease(run, timeout_s=60, say=said.append):
        assert json.loads((run / LEASE).read_text())["pid"] == os.getpid()
    assert len(said) == 1 and "took over" in said[0] and "another-host" in said[0]
    assert not (run / LEASE).exists()


def test_a_run_that_lost_its_lease_stops(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lease = RunLease(run, timeout_s=1.0)
    lease.acquire()
    _foreign(run, heartbeat_age_s=0)  # someone else's now
    deadline = time.monotonic() + 10
    while lease.lost is None and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(RunFailed, match="lost the lease on run directory"):
        lease.check()
    lease.release()
    assert json.loads((run / LEASE).read_text())["host"] == "another-host", "never removes another's lease"


def test_the_embedded_ray_goes_when_its_driver_is_killed(tmp_path):
    import psutil

    proc = subprocess.Popen([*CLI, "train", "--config", "configs/tutorial.yaml", "--run-dir", str(tmp_path / "run"),
                             "--set", "train.steps=100000", "--set", "logging.log_every=50", *QUIET],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_step(proc, "step 100/")
    started = psutil.Process(proc.pid).children(recursive=True)
    names = " ".join(p.name() for p in started)
    assert "raylet" in names and "gcs_server" in names, names
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    alive = started
    while alive and time.monotonic() < deadline:
        time.sleep(1)
        alive = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], [(p.pid, p.name()) for p in alive]


def test_the_embedded_ray_runs_workers_at_the_drivers_priority_and_stops_every_process_it_started():
    # Ray would run its workers at nice 15, and start an API server, an autoscaler's monitor and a
    # dashboard agent that a run's own instance has no use for (snndist's node agent stands in for the
    # last). Nothing may be left once it stops.
    script = """
import json, os, psutil, ray
from snndist.dist import cluster
assert cluster.connect(None, 1, 1)
assert ray.get(ray.remote(lambda: os.nice(0)).remote()) == os.nice(0)  # a worker process too
started = [p for p in psutil.Process().children(recursive=True) if "snndist.dist.reaper" not in p.cmdline()]
cmdlines = [" ".join(p.cmdline()) for p in started]
ray.shutdown()
_, alive = psutil.wait_procs(started, timeout=20)
print(json.dumps({"initialized": ray.is_initialized(), "started": cmdlines,
                  "alive": [p.pid for p in alive if p.status() != psutil.STATUS_ZOMBIE]}))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    started = " ".join(result["started"])
    assert all(name in started for name in ("gcs_server", "raylet", "log_monitor.py", "snndist/dist/node_agent.py",
                                            "ray::RuntimeEnvAgent")), started
    assert all(name not in started for name in ("dashboard/dashboard.py", "ray/autoscaler/", "DashboardAgent")), \
        started
    assert result == {**result, "initialized": False, "alive": []}, result


def test_the_node_agent_says_at_once_that_it_serves_nothing_as_ray_reads_it_and_ends_with_its_raylet(tmp_path):
    from ray._raylet import (DASHBOARD_AGENT_LISTEN_PORT_NAME, METRICS_AGENT_PORT_NAME, METRICS_EXPORT_PORT_NAME,
                             wait_for_persisted_port)

    from snndist.dist import node_agent

    node_id = "ab" * 28
    # A shell stands in for the raylet, its parent, and exits; Ray's arguments go with the two it reads.
    raylet = subprocess.Popen(["sh", "-c", f'"{sys.executable}" -u "{node_agent.__file__}" ray/dashboard/agent.py '
                               f"--node-id={node_id} --node-ip-address=127.0.0.1 --session-dir={tmp_path} "
                               "--minimal --head & echo $!; sleep 2"], stdout=subprocess.PIPE, text=True)
    agent = int(raylet.stdout.readline())
    for name in (METRICS_AGENT_PORT_NAME, METRICS_EXPORT_PORT_NAME, DASHBOARD_AGENT_LISTEN_PORT_NAME):
        assert wait_for_persisted_port(str(tmp_path), node_id, name, timeout_ms=10_000) == -1  # Ray's "not in use"
    assert Path(f"/proc/{agent}").exists()  # as long as its raylet lives: a raylet ends when its agent does
    raylet.wait(timeout=10)
    deadline = time.monotonic() + 10 * node_agent.POLL_S
    while Path(f"/proc/{agent}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{agent}").exists() or "Z" in Path(f"/proc/{agent}/stat").read_text().split()[2]


def test_the_embedded_ray_is_a_new_instance_beside_a_cluster_started_on_the_machine():
    # `ray start` (here Ray's test cluster) writes its address where a bare ray.init looks first: a run
    # given no address must start its own instance, not join that cluster (or fail to, as it did).
    script = """
import json, ray
from ray.cluster_utils import Cluster
from snndist.dist import cluster
other = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
try:
    started = cluster.connect(None, 1, 1)
    result = {"started": started, "gcs": ray.get_runtime_context().gcs_address, "other": other.address}
    ray.shutdown()
finally:
    other.shutdown()
print(json.dumps(result))  # last: nothing of Ray's can print after it
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["started"] and result["gcs"] != result["other"], result


def test_a_worker_killed_for_memory_stops_the_run_at_once(tmp_path):
    # Ray's memory monitor, told that 2% of the machine's memory is too much, kills the worker for real.
    env = {**os.environ, "RAY_memory_usage_threshold": "0.02", "RAY_memory_monitor_refresh_ms": "100"}
    result = subprocess.run([*CLI, "train", "--config", "configs/tutorial.yaml", "--run-dir", str(tmp_path / "run"),
                             "--set", "train.steps=200", *QUIET], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        r"snndist: error: worker 0 was killed by Ray for memory on node [\d.]+ \(\w+\), [\d.]+GB used / [\d.]+GB "
        r"limit \([\d.]+\); the worker used [\d.]+GB; not replayed, it would run out again: try a smaller "
        r"train.global_batch, more train.workers, or machines with more memory", lines[0]), lines
    assert "recovery" not in result.stdout


def test_device_memory_errors_are_recognised():
    from snndist.errors import out_of_device_memory

    xla = RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 68719476736 bytes.")
    assert out_of_device_memory(xla) and not out_of_device_memory(RuntimeError("INVALID_ARGUMENT: shapes"))


DISK_FULL = """
set -u
mount -t tmpfs -o size=4m tmpfs "$1"   # a small filesystem of this test's own mount namespace
head -c 3400000 /dev/zero > "$1/filler"
python="$2"; out="$3"
"$python" -m snndist train --config configs/tutorial.yaml --local --run-dir "$1/run" --set train.steps=200 \\
    --set checkpoint.every_steps=5 --set checkpoint.keep=100 --set logging.log_every=5 \\
    --set logging.wandb.mode=disabled > "$out/first.out" 2> "$out/first.err"
echo $? > "$out/first.rc"
ls "$1/run/checkpoints" > "$out/stopped.ls"
rm "$1/filler"   # space freed
"$python" -m snndist train --resume "$1/run" --local --set train.steps=60 > "$out/resume.out" 2> "$out/resume.err"
echo $? > "$out/resume.rc"
ls "$1/run/checkpoints" > "$out/resumed.ls"
"""


def test_a_full_disk_stops_the_run_cleanly_and_resume_goes_on_from_the_last_good_checkpoint(tmp_path):
    (tmp_path / "mnt").mkdir()
    (tmp_path / "out").mkdir()
    done = subprocess.run(["unshare", "-m", "bash", "-c", DISK_FULL, "disk-full", str(tmp_path / "mnt"),
                           sys.executable, str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    out = {p.name: p.read_text() for p in (tmp_path / "out").iterdir()}
    assert out["first.rc"].strip() == "1", out["first.out"] + out["first.err"]
    lines = out["first.err"].strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        r"snndist: error: cannot write checkpoint \S+/run/checkpoints/\d+: no space left on device \(the newest "
        r"committed checkpoint is intact; free the space and continue with --resume\)", lines[0]), lines
    failed = int(re.search(r"checkpoints/(\d+):", lines[0]).group(1))
    committed = sorted(int(n) for n in out["stopped.ls"].split() if n.isdigit())
    assert committed == list(range(5, failed, 5)), "every committed checkpoint before the failed one, none after"
    assert f"{failed}.orbax-checkpoint-tmp" in out["stopped.ls"].split(), "the torn one is only a temporary"
    assert out["resume.rc"].strip() == "0", out["resume.err"]
    assert f"resumed at step {committed[-1]} " in out["resume.out"]
    assert sorted(int(n) for n in out["resumed.ls"].split() if n.isdigit())[-1] == 60


def test_metrics_jsonl_records_each_step_once_across_replays_and_resumes(tmp_path):
    from snndist.track.tracker import JsonlTracker

    first = JsonlTracker(tmp_path)
    for step, kind in ((10, "train"), (20, "train"), (20, "eval"), (10, "train"), (20, "train"),  # 10, 20 replayed
                       (30, "train")):
        first.log({kind: float(step)}, step)
    first.finish()
    resumed = JsonlTracker(tmp_path)  # from a checkpoint at step 10: 20 and 30 come again
    for step in (20, 30, 40):
        resumed.log({"train": float(step)}, step)
    resumed.finish()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], next(k for k in r if k != "step")) for r in rows] == [
        (10, "train"), (20, "train"), (20, "eval"), (30, "train"), (40, "train")]
