"""Real Ray nodes for tests: ``ray start --block`` in a session of its own,
on free loopback ports; stopped by process tree (not ``ray stop``, which
would kill every Ray process on the machine, other clusters' included).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

VENV_BIN = Path(sys.executable).parent  # nodes must run this environment's ray and python
NODE_PORTS = ("node-manager-port", "object-manager-port", "metrics-export-port", "dashboard-agent-listen-port",
              "dashboard-agent-grpc-port", "runtime-env-agent-port")
HEAD_PORTS = ("port", "dashboard-port", "ray-client-server-port")


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: each socket is held until all are bound (one at a time, the system may hand
    out a port just released again)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def ray_env(**extra: str) -> dict:
    """This environment without a Ray address or W&B key of its own, with this venv's ray first on PATH."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH", "WANDB_API_KEY")}
    env.update(RAY_USAGE_STATS_ENABLED="0", PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", **extra)
    return env


@dataclass
class Node:
    proc: subprocess.Popen
    log: Path
    ports: dict = field(default_factory=dict)

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.ports['port']}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard-port']}"

    def check_running(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the node's whole process tree at once: a machine lost without notice (no drain)."""
        for p in _descendants(self.proc.pid):
            try:
                os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM the blocking ``ray start`` (it stops its node); SIGKILL what is left of its tree."""
        pids = _descendants(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids[1:]):
            time.sleep(0.2)
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def start_head(env: dict, num_cpus: int = 2, python: Path | None = None) -> tuple[Node, str]:
    """A head node, its Ray run by ``python`` if given; returns it and its temp dir (the caller removes it
    after ``stop``)."""
    temp_dir = tempfile.mkdtemp(prefix="snnray-", dir="/tmp")  # short: Ray's socket paths must fit
    ports = dict(zip(HEAD_PORTS + NODE_PORTS, free_ports(len(HEAD_PORTS + NODE_PORTS))))
    args = ["--head", "--dashboard-host=127.0.0.1", f"--temp-dir={temp_dir}"]
    wrap = (lambda cmd: [str(python), "-m", "ray.scripts.scripts", *cmd[1:]]) if python else None
    return _start(args, ports, env, num_cpus, Path(temp_dir) / "head.log", wrap=wrap), temp_dir


def start_worker_node(head: Node, env: dict, log: Path, num_cpus: int = 2, resources: str = "{}",
                      wrap: Callable[[list[str]], list[str]] | None = None) -> Node:
    """A second node joining ``head``; ``wrap`` turns the ``ray start`` command into another (e.g. unshare)."""
    ports = dict(zip(NODE_PORTS, free_ports(len(NODE_PORTS))))
    node = _start([f"--address={head.gcs_address}", f"--resources={resources}"], ports, env, num_cpus, log,
                  wrap=wrap)
    node.ports.update(port=head.ports["port"])
    return node


def _start(args: list[str], ports: dict, env: dict, num_cpus: int, log: Path,
           wrap: Callable[[list[str]], list[str]] | None = None) -> Node:
    cmd = [str(VENV_BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
           "--disable-usage-stats", "--min-worker-port=0", "--max-worker-port=0", *args,
           *(f"--{name}={port}" for name, port in ports.items())]
    if wrap:
        cmd = wrap(cmd)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    return Node(proc, log, ports)


def wait_for_nodes(nodes: list[Node], timeout_s: float = 120) -> list[str]:
    """Wait until the cluster of ``nodes`` (the head first) has them all alive; returns the node ids."""
    from ray._raylet import GcsClient

    head, count = nodes[0], len(nodes)
    deadline = time.monotonic() + timeout_s
    while True:
        for node in nodes:
            node.check_running()
        try:
            infos = GcsClient(address=head.gcs_address).get_all_node_info(timeout=5)
            alive = [node_id.hex() for node_id, info in infos.items() if info.state == 0]  # 0: ALIVE
            if len(alive) >= count:
                return alive
        except Exception:  # the GCS is not up yet
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the cluster did not reach {count} nodes within {timeout_s} s:\n"
                               f"{head.log.read_text()[-3000:]}")
        time.sleep(0.5)


def wait_for_jobs_api(head: Node, token: str | None = None, timeout_s: float = 120) -> None:
    """Wait until the head's dashboard answers its Jobs API (with ``token``, if token auth is on)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{head.dashboard}/api/jobs/", headers=headers)
    deadline = time.monotonic() + timeout_s
    while True:
        head.check_running()
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the dashboard at {head.dashboard} did not answer within {timeout_s} s:\n"
                               f"{head.log.read_text()[-3000:]}")
        time.sleep(0.5)


def remove(temp_dir: str) -> None:
    shutil.rmtree(temp_dir, ignore_errors=True)


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found
