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
the job sees the environment of the cluster's nodes.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from snndist.dist.job_client import STOP_TIMEOUT_S, JobClient, job_status, refuse_open_transport, resolve_address
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
            job_id = client.submit(entrypoint, build_runtime_env(working_dir, args.pip))
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
            message = one_line(client.info(job_id).message or "")
            raise ClusterError(f"job {job_id} {status.lower()}: {message} "
                               f"(see `snndist logs {job_id} --address {address}`)")
    if status == "PENDING":
        print(f"snndist: job {job_id} is still pending after {START_TIMEOUT_S:.0f} s",
              file=sys.stderr)
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    with quiet_logs():
        jobs = JobClient(args.address).list()
    if not jobs:
        print("no jobs")
        return 0
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("JOB", "STATUS", "START"):
        table.add_column(name, no_wrap=True)
    table.add_column("ENTRYPOINT", no_wrap=True, overflow="ellipsis", max_width=70)
    for j in jobs:
        start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.start_time / 1000)) if j.start_time else "-"
        table.add_row(j.submission_id or j.job_id or "-", job_status(j), start, " ".join((j.entrypoint or "").split()))
    # Off a terminal (a pipe, a log) rich would assume 80 columns and cut the job id short.
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with quiet_logs():
        info = JobClient(args.address).info(args.job)
    print(f"{args.job}: {job_status(info)}")
    if info.message:
        print(info.message.rstrip())
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
    submit.add_argument("--pip", action="extend", nargs="+", default=[], metavar="PKG",
                        help="pip packages to install in the job's environment")
    submit.add_argument("--local", action="store_true",
                        help="pass --local to `train`: train inside the job's process")
    submit.add_argument("--insecure", action="store_true",
                        help="send to a non-loopback plain-http address without a Ray auth token (refused "
                             "otherwise: an open Ray Jobs API runs anyone's code)")
    submit.add_argument("--no-wait", action="store_true",
                        help="return right after submitting, without waiting for the job to start")
    submit.set_defaults(func=cmd_submit)

    jobs = commands.add_parser("jobs", help="list the jobs of a Ray cluster",
                               description="List the cluster's jobs: id, status, start time, entrypoint.")
    jobs.add_argument("--address", metavar="URL", help=address_help)
    jobs.set_defaults(func=cmd_jobs)

    for name, func, help_, desc in (
            ("status", cmd_status, "show a job's status", "Print a job's status and message."),
            ("logs", cmd_logs, "print a job's logs", "Print a job's logs; --follow streams them until it ends."),
            ("stop", cmd_stop, "stop a job",
             f"Stop a job and wait (at most {STOP_TIMEOUT_S:.0f} s) until it has stopped.")):
        cmd = commands.add_parser(name, help=help_, description=desc)
        cmd.add_argument("job", metavar="JOB", help="the job's submission id, e.g. raysubmit_...")
        cmd.add_argument("--address", metavar="URL", help=address_help)
        if name == "logs":
            cmd.add_argument("--follow", "-f", action="store_true", help="stream the logs until the job ends")
        cmd.set_defaults(func=func)
