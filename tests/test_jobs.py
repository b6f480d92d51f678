"""The job commands (submit, jobs, status, logs, stop) against a real Ray head
node with token authentication on; no mocks.

The head is one of ``raynodes``: its own session, free loopback ports, a
temporary --temp-dir, stopped by process tree.
"""
from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from raynodes import VENV_BIN, free_port, ray_env, remove, start_head, wait_for_jobs_api

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "snndist"]
TUTORIAL = "configs/tutorial.yaml"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass
class Cluster:
    address: str  # the dashboard URL
    env: dict  # what a client needs: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN
    token: str


@pytest.fixture(scope="module")
def cluster():
    token = secrets.token_hex(16)
    env = ray_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    head, temp_dir = start_head(env)
    address = head.dashboard
    try:
        wait_for_jobs_api(head, token)
        # Token auth is on: without the token the dashboard refuses.
        try:
            urllib.request.urlopen(f"{address}/api/jobs/", timeout=5)
            pytest.fail("the dashboard answered without a token: token auth is off")
        except urllib.error.HTTPError as err:
            assert err.code == 401
        yield Cluster(address=address, env=env, token=token)
    finally:
        head.stop()
        remove(temp_dir)


def snndist(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _one_line_error(result: subprocess.CompletedProcess, code: int = 1) -> str:
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("snndist: error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def _job_id(submit_stdout: str) -> str:
    match = re.search(r"^submitted job (\S+)$", submit_stdout, re.M)
    assert match, submit_stdout
    return match.group(1)


def _status(cluster: Cluster, job_id: str) -> str:
    out = _ok(snndist("status", job_id, "--address", cluster.address, env=cluster.env))
    first = out.splitlines()[0]
    assert first.startswith(f"{job_id}: "), out
    return first.split(": ", 1)[1].strip()


@dataclass
class Submitted:
    job_id: str
    run_dir: Path
    result: subprocess.CompletedProcess
    marker: str
    status: str


@dataclass
class Queue:
    first: Submitted  # the tutorial config, 1000 steps (long enough that the next two find the head full), with a W&B key
    ids: list[str]  # it and two more, submitted right after it: with `snndist submit`, and with Ray's own CLI
    statuses: dict  # each job's final status
    waiting: dict  # job id: `snndist status` asked right after `snndist jobs` showed that job waiting


@pytest.fixture(scope="module")
def queue(cluster, tmp_path_factory) -> Queue:
    """Three 2-worker jobs on the 2-CPU head, back to back: two of them find it full."""
    base = tmp_path_factory.mktemp("jobs")
    marker = f"marker-{secrets.token_hex(8)}"
    sets = ["--set", "train.workers=2", "--set", "logging.log_every=50"]
    result = snndist("submit", "--address", cluster.address, "--config", TUTORIAL, *sets, "--set", "train.steps=1000",
                     "--run-dir", str(base / "run0"), env={**cluster.env, "WANDB_API_KEY": marker})
    ids = [_job_id(_ok(result)), _job_id(_ok(snndist(
        "submit", "--address", cluster.address, "--config", TUTORIAL, *sets, "--set", "train.steps=50",
        "--run-dir", str(base / "run1"), "--no-wait", env=cluster.env)))]
    # Ray's own CLI runs `python -m snndist train` too: the head's environment has snndist.
    workdir = base / "wd"
    workdir.mkdir()
    shutil.copy(REPO / TUTORIAL, workdir / "tutorial.yaml")
    ids.append(f"snndist-test-{secrets.token_hex(4)}")
    submitted = subprocess.run(
        [str(VENV_BIN / "ray"), "job", "submit", "--address", cluster.address, "--submission-id", ids[-1],
         "--working-dir", str(workdir), "--no-wait", "--", "python", "-m", "snndist", "train", "--config",
         "tutorial.yaml", *sets, "--set", "train.steps=50", "--run-dir", str(base / "run2")],
        cwd=base, env=cluster.env, capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    waiting, statuses = {}, {}
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        rows = _ok(snndist("jobs", "--address", cluster.address, env=cluster.env)).splitlines()
        row = {j: next(r for r in rows if r.startswith(j)) for j in ids}
        statuses = {j: row[j].split()[1] for j in ids}
        for j in ids:
            if statuses[j] == "PENDING" and "waiting for 2 x {CPU: 1}, 0 free" in row[j] and j not in waiting:
                waiting[j] = _status(cluster, j)
        if all(s in TERMINAL for s in statuses.values()):
            break
        time.sleep(0.5)
    first = Submitted(ids[0], base / "run0", result, marker, statuses[ids[0]])
    return Queue(first, ids, statuses, waiting)


@pytest.fixture(scope="module")
def tutorial_job(queue) -> Submitted:
    return queue.first


def test_submit_trains_and_logs(cluster, tutorial_job):
    job = tutorial_job
    assert job.status == "SUCCEEDED", _ok(snndist("logs", job.job_id, "--address", cluster.address,
                                                  env=cluster.env))
    out = job.result.stdout.strip().splitlines()
    assert len(out) == 2 and out[0] == f"submitted job {job.job_id}", job.result.stdout
    assert f"snndist logs {job.job_id}" in out[1]
    assert "step 1000/1000" in _ok(snndist("logs", job.job_id, "--address", cluster.address, env=cluster.env))
    followed = snndist("logs", job.job_id, "--follow", "--address", cluster.address, env=cluster.env,
                       timeout=60)
    assert "step 1000/1000" in _ok(followed)
    summary = json.loads((job.run_dir / "summary.json").read_text())
    assert summary["step"] == 1000


def test_submit_keeps_wandb_key_secret(cluster, tutorial_job, monkeypatch):
    job = tutorial_job
    assert job.marker not in job.result.stdout + job.result.stderr
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", cluster.token)
    from snndist.dist.job_client import JobClient

    client = JobClient(cluster.address)
    info = client.info(job.job_id)
    assert "env_vars" not in (info.runtime_env or {})
    assert job.marker not in json.dumps([info.entrypoint, info.runtime_env, info.metadata], default=str)
    assert job.marker not in client.logs(job.job_id)


def test_jobs_lists_ids(cluster, tutorial_job):
    out = _ok(snndist("jobs", "--address", cluster.address, env=cluster.env))
    assert out.splitlines()[0].split()[:3] == ["JOB", "STATUS", "START"]
    row = next(line for line in out.splitlines() if line.startswith(tutorial_job.job_id))
    assert row.split()[1] == tutorial_job.status
    assert "python -m snndist train" in row


def test_jobs_wait_their_turn_on_a_full_cluster(cluster, queue):
    """Those that found the head full waited (no limit on a cluster), said so in their logs, in `snndist jobs`
    and `snndist status`, and all three finished."""
    assert all(queue.statuses[j] == "SUCCEEDED" for j in queue.ids), queue.statuses
    # `snndist status`, asked right after `snndist jobs` showed a job waiting (it may have been placed since).
    assert any(s == "PENDING (waiting for 2 x {CPU: 1}, 0 free)" for s in queue.waiting.values()), queue.waiting
    for j in queue.waiting:
        logs = _ok(snndist("logs", j, "--address", cluster.address, env=cluster.env))
        assert "waiting for 2 x {CPU: 1} (PACK), 0 free (0 of 2 CPU)" in logs, logs[-3000:]
        assert re.search(r"^placed 2 x \{CPU: 1\} after \d+ s of waiting$", logs, re.M), logs[-3000:]
    for i, steps in enumerate((1000, 50, 50)):
        assert json.loads((queue.first.run_dir.parent / f"run{i}" / "summary.json").read_text())["step"] == steps


def test_ray_job_submit(queue):
    """The third job of the queue went through `ray job submit`."""
    run_dir = queue.first.run_dir.parent / "run2"
    assert queue.statuses[queue.ids[2]] == "SUCCEEDED"
    assert json.loads((run_dir / "summary.json").read_text())["step"] == 50
    assert (run_dir / "config.yaml").is_file()


def test_stop_running_job(cluster, tmp_path):
    result = snndist("submit", "--address", cluster.address, "--config", TUTORIAL,
                     "--set", "train.steps=1000000", "--local", "--run-dir", str(tmp_path / "long"),
                     env=cluster.env)
    job_id = _job_id(_ok(result))  # submit waits until the job runs
    assert _status(cluster, job_id) == "RUNNING"
    start = time.monotonic()
    out = _ok(snndist("stop", job_id, "--address", cluster.address, env=cluster.env, timeout=90))
    assert out.strip() == f"{job_id}: STOPPED"
    assert time.monotonic() - start < 70
    assert _status(cluster, job_id) == "STOPPED"


def test_unreachable_address(cluster):
    address = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    line = _one_line_error(snndist("jobs", "--address", address, env=cluster.env, timeout=60))
    assert time.monotonic() - start < 30
    assert address in line and "reach" in line
    line = _one_line_error(snndist("submit", "--address", address, "--config", TUTORIAL, "--local",
                                   env=cluster.env, timeout=60))
    assert address in line


def test_missing_address(cluster):
    env = {**cluster.env, "RAY_ADDRESS": "auto"}
    line = _one_line_error(snndist("status", "raysubmit_x", env=env))
    assert "RAY_ADDRESS is not a dashboard URL" in line


def test_wrong_token(cluster):
    env = {**cluster.env, "RAY_AUTH_TOKEN": "garbage"}
    line = _one_line_error(snndist("jobs", "--address", cluster.address, env=env))
    assert "rejected the auth token" in line and "RAY_AUTH_TOKEN" in line
    assert "garbage" not in line and cluster.token not in line


def test_missing_token(cluster, tmp_path):
    env = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_TOKEN"}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on
    for mode in ("token", None):
        if mode is None:
            env.pop("RAY_AUTH_MODE")
        line = _one_line_error(snndist("jobs", "--address", cluster.address, env=env))
        assert "token" in line and "RAY_AUTH_TOKEN" in line


def test_unknown_job(cluster):
    for command in ("status", "logs", "stop"):
        line = _one_line_error(snndist(command, "raysubmit_doesnotexist", "--address", cluster.address,
                                       env=cluster.env))
        assert "no job 'raysubmit_doesnotexist'" in line


def test_bad_config_fails_before_contacting_cluster(cluster):
    # An unreachable address: reaching for the cluster would exit 1, not 2.
    result = snndist("submit", "--address", "http://127.0.0.1:1", "--config", TUTORIAL,
                     "--set", "train.bogus=1", "--local", env=cluster.env)
    assert "train.bogus" in _one_line_error(result, code=2)


def test_entrypoint_and_runtime_env(tmp_path):
    """What submit sends, without a cluster: quoted pieces, this snndist package. (That no environment
    variable travels is checked on a real cluster: test_submit_keeps_wandb_key_secret.)"""
    import shlex

    from snndist.dist.job_commands import build_entrypoint, build_runtime_env, config_in_working_dir
    from snndist.errors import ConfigError

    entry = build_entrypoint("cfg dir/t.yaml", ["train.lr=1e-3", "model.layers[0]={size: 8}"],
                             "/runs/my run", local=True)
    assert shlex.split(entry) == ["python", "-m", "snndist", "train", "--config", "cfg dir/t.yaml",
                                  "--set", "train.lr=1e-3", "--set", "model.layers[0]={size: 8}",
                                  "--run-dir", "/runs/my run", "--local"]
    env = build_runtime_env(tmp_path, ["tqdm==4.67.1"])
    assert env == {"working_dir": str(tmp_path), "py_modules": [str(REPO / "snndist")],
                   "pip": ["tqdm==4.67.1"]}
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text("{}\n")
    assert config_in_working_dir(tmp_path / "sub" / "c.yaml", tmp_path) == "sub/c.yaml"
    with pytest.raises(ConfigError, match="inside --working-dir"):
        config_in_working_dir(REPO / TUTORIAL, tmp_path)


def test_config_outside_working_dir(cluster, tmp_path):
    result = snndist("submit", "--address", cluster.address, "--config", TUTORIAL,
                     "--working-dir", str(tmp_path), "--local", env=cluster.env)
    assert TUTORIAL in _one_line_error(result, code=2)
