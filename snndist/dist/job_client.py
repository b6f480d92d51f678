"""A client for a Ray cluster's job API: the dashboard address, Ray's auth token, and
``JobClient``, whose every request is bounded in time and every failure one line.

Authentication (Ray 2.60 token auth): a cluster started with
``RAY_AUTH_MODE=token`` (or by ``ray start --head`` with a token already
present) answers 401 to requests without ``Authorization: Bearer <token>``
and 403 to a wrong one. The token is taken, as Ray does, from
``RAY_AUTH_TOKEN``, else the file named by ``RAY_AUTH_TOKEN_PATH``, else
``~/.ray/auth_token``; ``ray get-auth-token`` prints it on the head. Ray's
own client only sends it when ``RAY_AUTH_MODE=token``; this one sends a
token it finds unless ``RAY_AUTH_MODE=disabled``.
"""
from __future__ import annotations

import asyncio
import ipaddress
import os
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from snndist.dist.ray_jobs_api import AUTH_DOC, bounded_client, translate_errors
from snndist.errors import ClusterError, ConfigError

#: (connect, read) seconds for each HTTP request to the dashboard; uploads of
#: the working dir and of the snndist package are small.
REQUEST_TIMEOUT = (10.0, 60.0)
#: How long ``stop`` waits for the job to reach a terminal status.
STOP_TIMEOUT_S = 60.0
POLL_S = 0.5
TERMINAL = ("STOPPED", "SUCCEEDED", "FAILED")


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


def refuse_open_transport(address: str, insecure: bool) -> None:
    """No job to another host over plain http without a token, unless ``insecure``.

    A Ray Jobs API that accepts anyone's request runs anyone's code (the ShadowRay attacks,
    CVE-2023-48022); sending to one across a network says the cluster is open.
    """
    parsed = urlsplit(address)
    if insecure or parsed.scheme != "http" or _is_loopback(parsed.hostname or "") or auth_headers()[0]:
        return
    raise ConfigError(f"--address {address}: refusing to submit over plain http to a non-loopback address without "
                      "a Ray auth token (an open Ray Jobs API runs anyone's code, CVE-2023-48022); set "
                      "RAY_AUTH_TOKEN, reach the dashboard on 127.0.0.1 through `ray dashboard`, ssh -L or "
                      "`kubectl port-forward`, or pass --insecure")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve anywhere
        return False


class JobClient:
    """A ``JobSubmissionClient`` with bounded requests and one-line errors."""

    def __init__(self, address: str | None = None):
        self.address = resolve_address(address)
        headers, self.token_source = auth_headers()
        with self.errors():
            self.sdk = bounded_client(self.address, headers, REQUEST_TIMEOUT)

    def errors(self, job_id: str | None = None):
        return translate_errors(self.address, job_id, self.token_source)

    def submit(self, entrypoint: str, runtime_env: dict) -> str:
        with self.errors():
            return self.sdk.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)

    def info(self, job_id: str):
        """The job's ``JobDetails`` (status, message, entrypoint, start_time, ...)."""
        with self.errors(job_id):
            return self.sdk.get_job_info(job_id)

    def status(self, job_id: str) -> str:
        return job_status(self.info(job_id))

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


def job_status(info) -> str:
    """A job's status as a plain string (``JobDetails.status`` is an enum)."""
    status = info.status
    return str(getattr(status, "value", status))
