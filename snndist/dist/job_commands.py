"""The job commands: ``submit``, ``jobs``, ``status``, ``logs``, ``stop``.

    snndist submit --address http://HEAD:8265 --config configs/tutorial.yaml --set train.steps=500
    snndist jobs   --address http://HEAD:8265
    snndist status raysubmit_XYZ --address http://HEAD:8265
    snndist logs   raysubmit_XYZ --address http://HEAD:8265 --follow
    snndist stop   raysubmit_XYZ --address http://HEAD:8265

``--address`` is the dashboard URL (port 8265 by default); without it the
``RAY_ADDRESS`` environment variable is used if it holds such a URL.

``submit`` validates the config here first, then runs
``python -m snndist train --config ... --run-dir ...`` on the cluster with a
runtime_env whose ``py_modules`` carry this very ``snndist`` package (the
cluster needs none installed) and whose ``working_dir`` holds the config.
It never forwards local environment variables (``WANDB_API_KEY`` included):
the job sees the environment of the cluster's nodes. ``--pip`` has Ray install
snndist's dependencies (the ranges its metadata pins) into the job's own
virtual environment, from the package index, for a cluster whose Python lacks
them.

``status`` and ``jobs`` say why a job failed (snndist's ``snndist: error:``
line, or the last exception line) and what a running job still waits for.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from snndist.deps import requirements
from snndist.dist.job_client import STOP_TIMEOUT_S, JobClient, job_status, refuse_open_transport, resolve_address
from snndist.dist.job_reasons import failure_reason, waiting_reason
from snndist.dist.ray_jobs_api import quiet_logs
from snndist.errors import ClusterError, ConfigError, one_line
from snndist.store.rundir import is_remote

#: How long ``submit`` waits for the job to leave PENDING (runtime env setup, a ``--pip`` install included).
START_TIMEOUT_S = 300.0
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the snndist package, shipped to the cluster


def default_remote_run_dir(config_path: str | Path) -> str:
    """``~/snndist/runs/<config stem>-<time>`` (home as seen here; the same on a local cluster)."""
    stem = Path(config_path).stem
    return str(Path.home() / "snndist" / "runs" / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")


def build_entrypoint(config: str, overrides: list[str], run_dir: str, local: bool = False) -> str:
    """The job's shell command: ``python -m snndist train ...``, every piece quoted."""
    argv = ["python", "-m", "snndist", "train", "--config", config]
    for item in overrides:
        argv += ["--set", item]
    argv += ["--run-dir", run_dir]
    if local:
        argv.append("--local")
    return " ".join(shlex.quote(a) for a in argv)


def build_runtime_env(working_dir: str | Path, pip: list[str] | None = None) -> dict:
    """``working_dir``, ``py_modules`` (this snndist package) and ``pip``; never ``env_vars``."""
    env: dict = {"working_dir": str(working_dir), "py_modules": [str(PACKAGE_DIR)]}
    if pip:
        env["pip"] = list(pip)
    return env


def pip_packages(pip: list[list[str]] | None) -> list[str]:
    """``--pip [PKG ...]``: snndist's dependencies and the packages named; none without ``--pip``."""
    if pip is None:
        return []
    try:
        deps = requirements()
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError("--pip: snndist is not installed in this Python (pip install -e . in its source "
                          "tree), so the dependency ranges to send are unknown") from None
    return deps + [pkg for group in pip for pkg in group]


def job_state(client: JobClient, info) -> tuple[str, str | None]:
    """A job's status and the reason to show with it: why it failed, or what a running one waits for
    (then its status is PENDING: Ray's job is running, snndist's workers are not)."""
    status, message = job_status(info), info.message or ""
    job_id = info.submission_id or info.job_id
    if status == "FAILED":
        return status, failure_reason(message) or failure_reason(client.logs(job_id)) or one_line(message, 200)
    if status == "RUNNING":
        waiting = waiting_reason(client.logs(job_id))
        return ("PENDING", waiting) if waiting else (status, None)
    if status in ("PENDING", "STOPPED"):  # Ray's own word: setting up the runtime env, stopped by whom
        return status, one_line(message, 200) or None
    return status, None


def config_in_working_dir(config: str | Path, working_dir: str | Path) -> str:
    """The config's path relative to ``working_dir`` (posix), which must hold it."""
    wd = Path(working_dir).expanduser().resolve()
    if not wd.is_dir():
        raise ConfigError(f"--working-dir {working_dir}: not a directory")
    cfg = Path(config).expanduser().resolve()
    try:
        return cfg.relative_to(wd).as_posix()
    except ValueError:
        raise ConfigError(f"{config}: the config file must be inside --working-dir {working_dir} "
                          f"(the job reads it from there)") from None


# ------------------------------------------------------------------ commands
def cmd_submit(args: argparse.Namespace) -> int:
    from snndist.config import load_config

    load_config(args.config, args.set)  # ConfigError (exit 2) before touching the cluster
    address = resolve_address(args.address)
    refuse_open_transport(address, args.insecure)
    if not args.run_dir:
        run_dir = default_remote_run_dir(args.config)
    elif is_remote(args.run_dir):
        run_dir = args.run_dir
    else:  # the job's working directory is a copy: a relative path would land inside it
        run_dir = os.path.abspath(os.path.expanduser(args.run_dir))

    tmp = None
    try:
        if args.working_dir:
            working_dir = Path(args.working_dir).expanduser().resolve()
            config = config_in_working_dir(args.config, working_dir)
        else:
            tmp = tempfile.mkdtemp(prefix="snndist-submit-")
            shutil.copy2(args.config, Path(tmp) / Path(args.config).name)
            working_dir, config = Path(tmp), Path(args.config).name
        entrypoint = build_entrypoint(config, args.set, run_dir, local=args.local)
        with quiet_logs():
            client = JobClient(address)
            job_id = client.submit(entrypoint, build_runtime_env(working_dir, pip_packages(args.pip)))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"submitted job {job_id}")
    print(f"follow its logs: snndist logs {job_id} --address {address} --follow", flush=True)
    if args.no_wait:
        return 0
    with quiet_logs():
        status = client.wait(job_id, ("RUNNING",), START_TIMEOUT_S)
        if status in ("FAILED", "STOPPED"):
            _, reason = job_state(client, client.info(job_id))
            raise ClusterError(f"job {job_id} {status.lower()}: {reason} "
                               f"(see `snndist logs {job_id} --address {address}`)")
    if status == "PENDING":
        print(f"snndist: job {job_id} is still pending after {START_TIMEOUT_S:.0f} s",
              file=sys.stderr)
    return 0


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def cmd_jobs(args: argparse.Namespace) -> int:
    with quiet_logs():
        client = JobClient(args.address)
        jobs = [(j, *job_state(client, j)) for j in client.list()]
    if not jobs:
        print("no jobs")
        return 0
    rows = [("JOB", "STATUS", "START", "REASON", "ENTRYPOINT")]
    for j, status, reason in jobs:
        start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.start_time / 1000)) if j.start_time else "-"
        rows.append((j.submission_id or j.job_id or "-", status, start, _cut(reason or "", 100),
                     _cut(" ".join((j.entrypoint or "").split()), 60)))
    # Plain columns: the whole id and status whatever the width (rich drops columns on a narrow terminal).
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with quiet_logs():
        client = JobClient(args.address)
        status, reason = job_state(client, client.info(args.job))
    if status == "PENDING" and reason:
        print(f"{args.job}: {status} ({reason})")
    else:
        print(f"{args.job}: {status}")
        if reason:
            print(reason)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    with quiet_logs():
        client = JobClient(args.address)
        if not args.follow:
            sys.stdout.write(client.logs(args.job))
            sys.stdout.flush()
            return 0

        def write(chunk: str) -> None:
            sys.stdout.write(chunk)
            sys.stdout.flush()

        try:
            client.follow(args.job, write)
        except KeyboardInterrupt:  # stop following; the job goes on
            return 130
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    with quiet_logs():
        status = JobClient(args.address).stop(args.job)
    print(f"{args.job}: {status}")
    return 0


def add_job_commands(commands) -> None:
    """Register submit, jobs, status, logs and stop on the CLI's subparsers."""
    address_help = "the Ray dashboard URL, http://HOST:8265 (default: $RAY_ADDRESS)"

    submit = commands.add_parser("submit", help="run training on a Ray cluster as a Ray job", description=(
        "Validate the config here, then submit `python -m snndist train` as a Ray job that carries "
        "this snndist package and the config; print the job id. Local environment variables "
        "(WANDB_API_KEY included) are not sent."))
    submit.add_argument("--address", metavar="URL", help=address_help)
    submit.add_argument("--config", required=True, metavar="FILE", help="YAML config, e.g. configs/tutorial.yaml")
    submit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. train.steps=500 (repeatable)")
    submit.add_argument("--working-dir", metavar="DIR",
                        help="directory to upload as the job's working dir; must hold the config "
                             "(default: a directory with just the config)")
    submit.add_argument("--run-dir", metavar="DIR",
                        help="run directory on the cluster (default: ~/snndist/runs/<config>-<time>)")
    submit.add_argument("--pip", action="append", nargs="*", metavar="PKG",
                        help="have Ray install snndist's dependencies (and any PKG named) into the job's own "
                             "environment, from the package index: for a cluster whose Python lacks them")
    submit.add_argument("--local", action="store_true",
                        help="pass --local to `train`: train inside the job's process")
    submit.add_argument("--insecure", action="store_true",
                        help="send to a non-loopback plain-http address without a Ray auth token (refused "
                             "otherwise: an open Ray Jobs API runs anyone's code)")
    submit.add_argument("--no-wait", action="store_true",
                        help="return right after submitting, without waiting for the job to start")
    submit.set_defaults(func=cmd_submit)

    jobs = commands.add_parser("jobs", help="list the jobs of a Ray cluster",
                               description="List the cluster's jobs: id, status, start time, why one failed or "
                                           "what it waits for, entrypoint.")
    jobs.add_argument("--address", metavar="URL", help=address_help)
    jobs.set_defaults(func=cmd_jobs)

    for name, func, help_, desc in (
            ("status", cmd_status, "show a job's status",
             "Print a job's status, and why it failed or what it waits for."),
            ("logs", cmd_logs, "print a job's logs", "Print a job's logs; --follow streams them until it ends."),
            ("stop", cmd_stop, "stop a job",
             f"Stop a job and wait (at most {STOP_TIMEOUT_S:.0f} s) until it has stopped.")):
        cmd = commands.add_parser(name, help=help_, description=desc)
        cmd.add_argument("job", metavar="JOB", help="the job's submission id, e.g. raysubmit_...")
        cmd.add_argument("--address", metavar="URL", help=address_help)
        if name == "logs":
            cmd.add_argument("--follow", "-f", action="store_true", help="stream the logs until the job ends")
        cmd.set_defaults(func=func)
