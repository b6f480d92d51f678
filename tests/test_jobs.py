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
from raynodes import VENV_BIN, free_port, ray_env, remove, start_head

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
        deadline = time.monotonic() + 120
        request = urllib.request.Request(f"{address}/api/jobs/",
                                         headers={"Authorization": f"Bearer {token}"})
        while True:
            head.check_running()
            try:
                with urllib.request.urlopen(request, timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the dashboard at {address} did not answer within 120 s:\n"
                            f"{head.log.read_text()[-3000:]}")
            time.sleep(0.5)
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


def _wait_terminal(cluster: Cluster, job_id: str, timeout_s: float = 300) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status = _status(cluster, job_id)
        if status in TERMINAL or time.monotonic() > deadline:
            return status
        time.sleep(1)


@dataclass
class Submitted:
    job_id: str
    run_dir: Path
    result: subprocess.CompletedProcess
    marker: str
    status: str


@pytest.fixture(scope="module")
def tutorial_job(cluster, tmp_path_factory):
    """The tutorial config, 200 steps on a Ray worker of the cluster, submitted with a W&B key in the environment."""
    run_dir = tmp_path_factory.mktemp("jobs") / "run"
    marker = f"marker-{secrets.token_hex(8)}"
    result = snndist("submit", "--address", cluster.address, "--config", TUTORIAL,
                     "--set", "train.steps=200", "--set", "logging.log_every=50",
                     "--run-dir", str(run_dir), env={**cluster.env, "WANDB_API_KEY": marker})
    job_id = _job_id(_ok(result))
    return Submitted(job_id, run_dir, result, marker, _wait_terminal(cluster, job_id))


def test_submit_trains_and_logs(cluster, tutorial_job):
    job = tutorial_job
    assert job.status == "SUCCEEDED", _ok(snndist("logs", job.job_id, "--address", cluster.address,
                                                  env=cluster.env))
    out = job.result.stdout.strip().splitlines()
    assert len(out) == 2 and out[0] == f"submitted job {job.job_id}", job.result.stdout
    assert f"snndist logs {job.job_id}" in out[1]
    assert "step 200/200" in _ok(snndist("logs", job.job_id, "--address", cluster.address, env=cluster.env))
    followed = snndist("logs", job.job_id, "--follow", "--address", cluster.address, env=cluster.env,
                       timeout=60)
    assert "step 200/200" in _ok(followed)
    summary = json.loads((job.run_dir / "summary.json").read_text())
    assert summary["step"] == 200


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


def test_ray_job_submit(cluster, tmp_path):
    """Ray's own CLI runs `python -m snndist train` too: the head's environment has snndist."""
    workdir = tmp_path / "wd"
    workdir.mkdir()
    shutil.copy(REPO / TUTORIAL, workdir / "tutorial.yaml")
    run_dir = tmp_path / "run2"
    job_id = f"snndist-test-{secrets.token_hex(4)}"
    result = subprocess.run(
        [str(VENV_BIN / "ray"), "job", "submit", "--address", cluster.address, "--submission-id", job_id,
         "--working-dir", str(workdir), "--", "python", "-m", "snndist", "train", "--config",
         "tutorial.yaml", "--set", "train.steps=100", "--run-dir", str(run_dir)],
        cwd=tmp_path, env=cluster.env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _wait_terminal(cluster, job_id, timeout_s=60) == "SUCCEEDED"
    assert json.loads((run_dir / "summary.json").read_text())["step"] == 100
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
