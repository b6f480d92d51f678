"""Secure defaults: the local Ray instance of `snndist train` runs no dashboard or Jobs API, and
`snndist submit` does not send a job across a network to a Jobs API that takes anyone's request."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from raynodes import _descendants, free_port, ray_env

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "snndist"]


def _listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of the TCP sockets process ``pid`` listens on, from /proc."""
    try:
        inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{pid}/fd")
                  if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")}
    except OSError:  # the process ended meanwhile
        return []
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state, inode = row.split()[1], row.split()[3], row.split()[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                address, port = local.split(":")
                found.append((_ip(address), int(port, 16)))
    return found


def _ip(hex_address: str) -> str:
    if len(hex_address) == 8:  # IPv4, little-endian
        return ".".join(str(int(hex_address[i:i + 2], 16)) for i in (6, 4, 2, 0))
    return "::" if set(hex_address) == {"0"} else hex_address


def test_the_local_ray_instance_of_train_starts_no_dashboard_and_no_jobs_api():
    # Neither the dashboard's Jobs API (8265) nor its node agent's (52365, on the node's address), which
    # Ray's token alone guarded.
    # What `snndist train` does without an address: cluster.connect(None, ...) starts the local instance.
    code = ("import sys; from snndist.dist import cluster; cluster.connect(None, 1, 1); print('up', flush=True); "
            "sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=ray_env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up", proc.stderr.read()
        started = {p: Path(f"/proc/{p}/cmdline").read_text(errors="replace") for p in _descendants(proc.pid)}
        assert any("raylet" in cmdline for cmdline in started.values()), started
        # The UI and the Jobs API are the dashboard process's (an open Jobs API runs anyone's code).
        assert [p for p, cmdline in started.items() if "ray/dashboard/dashboard.py" in cmdline] == [], started
        from ray._private.ray_constants import DEFAULT_DASHBOARD_AGENT_LISTEN_PORT, DEFAULT_DASHBOARD_PORT

        listeners = [(p, address, port) for p in started for address, port in _listening(p)]
        jobs_apis = (DEFAULT_DASHBOARD_PORT, DEFAULT_DASHBOARD_AGENT_LISTEN_PORT)
        assert listeners and [x for x in listeners if x[2] in jobs_apis] == [], listeners
    finally:
        proc.communicate("", timeout=60)
    assert proc.returncode == 0, proc.stderr


def _submit(address: str, *extra: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "submit", "--address", address, "--config", "configs/tutorial.yaml", "--no-wait",
                           *extra], cwd=REPO, env=ray_env(**env), capture_output=True, text=True, timeout=120)


def test_submit_refuses_plain_http_to_another_host_without_a_token(tmp_path):
    # No token anywhere: none in the environment, a home without ~/.ray/auth_token.
    no_token = {"HOME": str(tmp_path), "RAY_AUTH_MODE": "disabled"}
    # 0.0.0.0 is not loopback to the check, and a connection there fails at once on a free port.
    address = f"http://0.0.0.0:{free_port()}"
    refused = _submit(address, **no_token)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        f"snndist: error: --address {address}: refusing to submit over plain http to a non-loopback address "
        "without a Ray auth token (an open Ray Jobs API runs anyone's code, CVE-2023-48022); set RAY_AUTH_TOKEN, "
        "reach the dashboard on 127.0.0.1 through `ray dashboard`, ssh -L or `kubectl port-forward`, or pass "
        "--insecure"]
    # --insecure, or a token, lets it through: it then fails only because nothing listens there.
    for result in (_submit(address, "--insecure", **no_token),
                   _submit(address, **{**no_token, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "t" * 32})):
        assert result.returncode == 1 and "refusing" not in result.stderr and address in result.stderr, result.stderr
