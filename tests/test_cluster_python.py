"""A cluster whose Python lacks snndist's dependencies: the head started from a virtual environment that
was not activated, so that a job's ``python`` is another interpreter. The job fails with one line naming
that interpreter and the missing module; ``snndist submit --pip`` has Ray install the dependencies into
the job's own environment, and the same job succeeds.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import sysconfig
import time
import tomllib
from pathlib import Path

import pytest
from raynodes import VENV_BIN, ray_env, remove, start_head, wait_for_jobs_api

from snndist.deps import IMPORTS

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "snndist"]
RUN = ["--config", "configs/tutorial.yaml", "--set", "train.steps=20", "--set", "logging.log_every=10", "--local"]


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """``python`` with none of snndist's dependencies: a virtual environment of the base interpreter, no pip."""
    return _venv(tmp_path_factory.mktemp("bare") / "venv")


@pytest.fixture(scope="module")
def ray_python(tmp_path_factory) -> Path:
    """``python`` of a virtual environment that reaches this one's packages through a site dir. Ray's pip
    plugin copies the environment Ray runs in for each job: a few files, not this whole environment (GBs)."""
    venv = tmp_path_factory.mktemp("ray") / "venv"
    python = _venv(venv)
    site_packages = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    # addsitedir, not a bare path line: this environment's own .pth files (snndist's editable install) count
    (site_packages / "this_environment.pth").write_text(
        f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    return python


def _venv(path: Path) -> Path:
    """A virtual environment of the base interpreter at ``path``, without pip; its ``python``."""
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    return path / "bin" / "python"


def test_dependency_names_follow_pyproject():
    pinned = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.match(r"[A-Za-z0-9_.-]+", line).group(0).lower() for line in pinned}
    assert names == set(IMPORTS.values())


def test_a_python_without_the_dependencies_says_which_in_one_line(bare_python):
    result = subprocess.run([str(bare_python), "-m", "snndist", "train", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2 and result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(f"snndist: error: the Python running snndist, {bare_python}, cannot import jax "
                           f"(from the jax package) (and {len(IMPORTS) - 1} more: "), line
    assert "snndist submit --pip" in line


@pytest.fixture(scope="module")
def bare_head(bare_python, ray_python):
    """A 2-CPU head run by this environment's Ray (from ``ray_python``), with the bare ``python`` first on its
    PATH."""
    token = secrets.token_hex(16)
    env = ray_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    env["PATH"] = os.pathsep.join([str(bare_python.parent), *(p for p in env["PATH"].split(os.pathsep)
                                                              if Path(p) != VENV_BIN)])
    head, temp_dir = start_head(env, python=ray_python)
    try:
        wait_for_jobs_api(head, token)
        yield head.dashboard, ray_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    finally:
        head.stop()
        remove(temp_dir)


def _snndist(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _submitted(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return re.search(r"^submitted job (\S+)$", result.stdout, re.M).group(1)


def _final_status(address: str, env: dict, job_id: str, timeout_s: float = 300) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status = _snndist("status", job_id, "--address", address, env=env).stdout.splitlines()[0].split(": ", 1)[1]
        if status in ("SUCCEEDED", "FAILED", "STOPPED") or time.monotonic() > deadline:
            return status
        time.sleep(1)


def test_a_job_in_a_python_without_the_dependencies_fails_in_one_line_and_pip_mends_it(bare_head, bare_python,
                                                                                      tmp_path, monkeypatch):
    address, env = bare_head
    job_id = _submitted(_snndist("submit", "--address", address, *RUN, "--run-dir", str(tmp_path / "bare"),
                                 "--no-wait", env=env))
    reason = (f"snndist: error: the Python running snndist, {bare_python}, cannot import jax (from the jax "
              f"package) (and {len(IMPORTS) - 1} more: ")
    assert _final_status(address, env, job_id) == "FAILED"
    status = _snndist("status", job_id, "--address", address, env=env)
    lines = status.stdout.splitlines()
    assert status.returncode == 0 and lines[0] == f"{job_id}: FAILED", status.stdout
    assert len(lines) == 2 and lines[1].startswith(reason), status.stdout  # the line, not Ray's log dump
    jobs = _snndist("jobs", "--address", address, env=env).stdout
    assert reason[:60] in next(row for row in jobs.splitlines() if row.startswith(job_id))

    # --pip: Ray makes the job a virtual environment (a copy of the one Ray runs in) and pip installs
    # snndist's dependencies into it; its `python` is first on the job's PATH.
    run_dir = tmp_path / "pip"
    job_id = _submitted(_snndist("submit", "--address", address, *RUN, "--run-dir", str(run_dir), "--pip", env=env))
    status = _final_status(address, env, job_id)
    assert status == "SUCCEEDED", _snndist("logs", job_id, "--address", address, env=env).stdout[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["step"] == 20
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from snndist.deps import requirements
    from snndist.dist.job_client import JobClient

    assert JobClient(address).info(job_id).runtime_env["pip"]["packages"] == requirements()
