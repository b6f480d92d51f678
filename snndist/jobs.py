"""Training as Ray jobs: submit a run to a cluster's dashboard, then follow it.

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

Authentication (Ray 2.60 token auth): a cluster started with
``RAY_AUTH_MODE=token`` (or by ``ray start --head`` with a token already
present) answers 401 to requests without ``Authorization: Bearer <token>``
and 403 to a wrong one. The token is taken, as Ray does, from
``RAY_AUTH_TOKEN``, else the file named by ``RAY_AUTH_TOKEN_PATH``, else
``~/.ray/auth_token``; ``ray get-auth-token`` prints it on the head. Ray's
own client only sends it when ``RAY_AUTH_MODE=token``; these commands send a
token they find unless ``RAY_AUTH_MODE=disabled``.

Every failure to reach the cluster, to authenticate, or to find a job is a
one-line :class:`~snndist.errors.ClusterError`; every request is bounded by a
timeout.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from snndist.errors import ClusterError, ConfigError, SnndistError
from snndist.rundir import is_remote

#: (connect, read) seconds for each HTTP request to the dashboard; uploads of
#: the working dir and of the snndist package are small.
REQUEST_TIMEOUT = (10.0, 60.0)
#: How long ``stop`` waits for the job to reach a terminal status.
STOP_TIMEOUT_S = 60.0
#: How long ``submit`` waits for the job to leave PENDING (runtime env setup,
#: a ``--pip`` install included).
START_TIMEOUT_S = 300.0
POLL_S = 0.5

TERMINAL = ("STOPPED", "SUCCEEDED", "FAILED")
AUTH_DOC = ("set RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token to the cluster's token, "
            "which `ray get-auth-token` prints on the head")
PACKAGE_DIR = Path(__file__).resolve().parent


# ------------------------------------------------------------------ address and auth
def resolve_address(address: str | None) -> str:
    """The dashboard URL: ``address``, else ``$RAY_ADDRESS`` if it is an http(s) URL."""
    if not address:
        env = os.environ.get("RAY_ADDRESS", "").strip()
        if not env.startswith(("http://", "https://")):
            raise ClusterError("no --address and RAY_ADDRESS is not a dashboard URL (http://HOST:8265)")
        address = env
    address = address.strip().rstrip("/")
    if "://" not in address:
        address = "http://" + address
    if not address.startswith(("http://", "https://")) or not address.split("://", 1)[1]:
        raise ClusterError(f"--address {address}: expected the dashboard URL, http://HOST:8265")
    return address


def find_token() -> tuple[str, str] | None:
    """``(token, where it came from)`` in Ray's order of precedence, or None."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token, "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    if path:
        try:
            token = Path(path).expanduser().read_text().strip()
        except OSError as err:
            raise ClusterError(f"RAY_AUTH_TOKEN_PATH={path}: cannot read the token file "
                               f"({err.strerror or err})") from None
        if not token:
            raise ClusterError(f"RAY_AUTH_TOKEN_PATH={path}: the token file is empty")
        return token, "RAY_AUTH_TOKEN_PATH"
    default = Path.home() / ".ray" / "auth_token"
    try:
        token = default.read_text().strip()
    except OSError:
        return None
    return (token, str(default)) if token else None


def auth_headers() -> tuple[dict[str, str], str | None]:
    """The Authorization header to send (unless ``RAY_AUTH_MODE=disabled``), and its source."""
    mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
    if mode == "disabled":
        return {}, None
    found = find_token()
    if found is None:
        if mode == "token":
            raise ClusterError(f"RAY_AUTH_MODE=token but no auth token was found: {AUTH_DOC}")
        return {}, None
    token, source = found
    return {"Authorization": f"Bearer {token}"}, source


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


@contextlib.contextmanager
def cluster_errors(address: str, job_id: str | None = None,
                   token_source: str | None = None) -> Iterator[None]:
    """Turn what Ray's SDK, requests and aiohttp raise into one-line ClusterErrors."""
    import aiohttp
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except SnndistError:
        raise
    except AuthenticationError as err:
        text = getattr(err, "message", "") or str(err)
        if text.startswith("Authentication failed"):  # 403: a token was sent and refused
            sent = f" from {token_source}" if token_source else ""
            raise ClusterError(f"the Ray cluster at {address} rejected the auth token{sent} "
                               f"({AUTH_DOC})") from None
        if text.startswith("Authentication required"):  # 401: no token was sent
            if os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "disabled":
                raise ClusterError(f"the Ray cluster at {address} requires an auth token, which "
                                   f"RAY_AUTH_MODE=disabled keeps from being sent (unset it; "
                                   f"{AUTH_DOC})") from None
            raise ClusterError(f"the Ray cluster at {address} requires an auth token and none was "
                               f"found ({AUTH_DOC})") from None
        raise ClusterError(f"auth token problem for the Ray cluster at {address}: "
                           f"{_first_line(text)}") from None
    except aiohttp.WSServerHandshakeError as err:  # the log stream's websocket
        if err.status in (401, 403):
            raise ClusterError(f"the Ray cluster at {address} rejected the auth token ({AUTH_DOC})") from None
        if err.status == 404 and job_id:
            raise _unknown_job(address, job_id) from None
        raise ClusterError(f"cannot stream logs from the Ray cluster at {address}: "
                           f"HTTP {err.status} {err.message}") from None
    except (requests.exceptions.Timeout, asyncio.TimeoutError, TimeoutError):
        raise ClusterError(f"the Ray cluster at {address} did not answer in time "
                           f"(is the dashboard up and reachable?)") from None
    except (requests.exceptions.RequestException, aiohttp.ClientError, ConnectionError) as err:
        detail = _first_line(str(err)) if not isinstance(err, ConnectionError) else ""
        detail = f": {detail[:200]}" if detail and "Failed to connect" not in detail else ""
        raise ClusterError(f"cannot reach the Ray dashboard at {address} "
                           f"(is the cluster up, and is this its dashboard URL?){detail}") from None
    except RuntimeError as err:
        text = _first_line(str(err))
        if job_id and "status code 404" in text:
            raise _unknown_job(address, job_id) from None
        if "WebSocket" in text:
            raise ClusterError(f"lost the log stream from the Ray cluster at {address}: {text}") from None
        if "Version check returned 404" in text or "Jobs API is not supported" in text:
            raise ClusterError(f"{address} does not serve Ray's job API "
                               f"(expected the Ray dashboard, http://HOST:8265)") from None
        raise ClusterError(f"the Ray cluster at {address} refused the request: {text}") from None
    except ValueError as err:  # a malformed URL
        raise ClusterError(f"--address {address}: {_first_line(str(err))}") from None


def _unknown_job(address: str, job_id: str) -> ClusterError:
    return ClusterError(f"no job {job_id!r} on the Ray cluster at {address} "
                        f"(`snndist jobs --address {address}` lists them)")


# ------------------------------------------------------------------ the client
class JobClient:
    """A ``JobSubmissionClient`` with bounded requests and one-line errors."""

    def __init__(self, address: str | None = None):
        from ray.job_submission import JobSubmissionClient

        class _Bounded(JobSubmissionClient):
            def _do_request(self, method, endpoint, **kwargs):  # every SDK request goes here
                kwargs.setdefault("timeout", REQUEST_TIMEOUT)
                return super()._do_request(method, endpoint, **kwargs)

        self.address = resolve_address(address)
        headers, self.token_source = auth_headers()
        with self.errors():
            self.sdk = _Bounded(self.address, headers=headers)

    def errors(self, job_id: str | None = None):
        return cluster_errors(self.address, job_id, self.token_source)

    def submit(self, entrypoint: str, runtime_env: dict) -> str:
        with self.errors():
            return self.sdk.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)

    def info(self, job_id: str):
        """The job's ``JobDetails`` (status, message, entrypoint, start_time, ...)."""
        with self.errors(job_id):
            return self.sdk.get_job_info(job_id)

    def status(self, job_id: str) -> str:
        return _status(self.info(job_id))

    def list(self) -> list:
        with self.errors():
            jobs = self.sdk.list_jobs()
        return sorted(jobs, key=lambda j: j.start_time or 0)

    def logs(self, job_id: str) -> str:
        with self.errors(job_id):
            return self.sdk.get_job_logs(job_id)

    def follow(self, job_id: str, write: Callable[[str], None]) -> None:
        """Stream the job's logs to ``write`` until the job ends."""
        self.info(job_id)  # an unknown id fails here, with a clear message

        async def tail():
            async for chunk in self.sdk.tail_job_logs(job_id):
                write(chunk)

        with self.errors(job_id):
            asyncio.run(tail())

    def stop(self, job_id: str, timeout_s: float = STOP_TIMEOUT_S) -> str:
        """Ask the job to stop, wait until it is terminal; its final status."""
        with self.errors(job_id):
            self.sdk.stop_job(job_id)
        status = self.wait(job_id, TERMINAL, timeout_s)
        if status not in TERMINAL:
            raise ClusterError(f"job {job_id} did not stop within {timeout_s:.0f} s (status {status})")
        return status

    def wait(self, job_id: str, statuses: tuple[str, ...], timeout_s: float) -> str:
        """Poll until the status is one of ``statuses`` or terminal, at most ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status(job_id)
            if status in statuses or status in TERMINAL or time.monotonic() >= deadline:
                return status
            time.sleep(POLL_S)


def _status(info) -> str:
    status = info.status
    return str(getattr(status, "value", status))


# ------------------------------------------------------------------ what submit sends
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


@contextlib.contextmanager
def _quiet_ray_logs() -> Iterator[None]:
    """Keep Ray's INFO lines (package uploads, websocket closes) off the terminal."""
    import ray.job_submission  # noqa: F401  (importing ray configures its loggers: do it first)

    loggers = [logging.getLogger(name) for name in
               ("ray", "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


# ------------------------------------------------------------------ commands
def cmd_submit(args: argparse.Namespace) -> int:
    from snndist.config import load_config

    load_config(args.config, args.set)  # ConfigError (exit 2) before touching the cluster
    address = resolve_address(args.address)
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
        with _quiet_ray_logs():
            client = JobClient(address)
            job_id = client.submit(entrypoint, build_runtime_env(working_dir, args.pip))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"submitted job {job_id}")
    print(f"follow its logs: snndist logs {job_id} --address {address} --follow", flush=True)
    if args.no_wait:
        return 0
    with _quiet_ray_logs():
        status = client.wait(job_id, ("RUNNING",), START_TIMEOUT_S)
        if status in ("FAILED", "STOPPED"):
            message = _first_line(client.info(job_id).message or "")
            raise ClusterError(f"job {job_id} {status.lower()}: {message} "
                               f"(see `snndist logs {job_id} --address {address}`)")
    if status == "PENDING":
        print(f"snndist: job {job_id} is still pending after {START_TIMEOUT_S:.0f} s",
              file=sys.stderr)
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    with _quiet_ray_logs():
        jobs = JobClient(args.address).list()
    if not jobs:
        print("no jobs")
        return 0
    rows = [("JOB", "STATUS", "START", "ENTRYPOINT")]
    for j in jobs:
        start = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.start_time / 1000))
                 if j.start_time else "-")
        rows.append((j.submission_id or j.job_id or "-", _status(j), start, _shorten(j.entrypoint or "")))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3])
    return 0


def _shorten(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def cmd_status(args: argparse.Namespace) -> int:
    with _quiet_ray_logs():
        info = JobClient(args.address).info(args.job)
    print(f"{args.job}: {_status(info)}")
    if info.message:
        print(info.message.rstrip())
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    with _quiet_ray_logs():
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
    with _quiet_ray_logs():
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
