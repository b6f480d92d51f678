"""The node agent of the Ray instance a run starts for itself: it serves nothing, and says so at once.

A raylet starts a node agent (Ray's dashboard agent) and, before it registers its node, waits until the
agent has written down its three ports: metrics, metrics export and HTTP. Ray's agent first imports and
loads every dashboard module, to serve a dashboard, Prometheus and job submissions, none of which the
instance ``cluster.connect`` starts has: 1.0 s of ``ray.init`` and 1.3 CPU-seconds on 2 cores. This one
writes Ray's "not in use" (-1) for all three, then lives as long as its raylet (a raylet ends when its
agent does).

    python node_agent.py [Ray's agent arguments]    # reads --node-id and --session-dir

Run as a script: it imports nothing but the standard library.
"""
from __future__ import annotations

import argparse
import os
import time

PORT_NAMES = ("metrics_agent_port", "metrics_export_port", "dashboard_agent_listen_port")  # ray._raylet's
NOT_IN_USE = -1
POLL_S = 1.0  # how often it looks whether its raylet is still there


def port_file(session_dir: str, node_id: str, name: str) -> str:
    return os.path.join(session_dir, f"{name}_{node_id}")


def write_ports(session_dir: str, node_id: str) -> None:
    for name in PORT_NAMES:
        path = port_file(session_dir, node_id, name)
        with open(f"{path}.tmp", "w") as f:
            f.write(str(NOT_IN_USE))
        os.replace(f"{path}.tmp", path)  # the raylet polls for the file: it never sees one half written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--session-dir", required=True)
    args, _ = parser.parse_known_args(argv)  # the rest of Ray's agent arguments say what this does not serve
    write_ports(args.session_dir, args.node_id)
    raylet = os.getppid()
    while os.getppid() == raylet:  # a raylet killed outright leaves this process to init: then it goes too
        time.sleep(POLL_S)


if __name__ == "__main__":
    main()
