"""Ends what is left of the embedded Ray instance once its driver is gone, however it went.

Ray ties its head processes (GCS, raylet) to the driver that started them,
but when that driver is killed (SIGKILL, out of memory), the raylet's
RuntimeEnvAgent (and Ray's DashboardAgent, where it runs) outlives it for
good: on seeing the raylet die it reports to the GCS, which is gone too, and
waits on it. So a driver
that starts a local instance also starts this watcher, in a session of its
own, holding a pipe from the driver: it keeps a list of every process the
driver started (and those started by them); when the pipe closes (the driver
exited, cleanly or not) it gives Ray a few seconds to stop by itself, then
kills whatever of that list still runs. A cluster snndist joined
(``--address``) is never touched: no watcher is started for it.

    python -m snndist.dist.reaper DRIVER_PID      # stdin: the pipe from the driver
"""
from __future__ import annotations

import os
import select
import subprocess
import sys
import time

GRACE_S = 3.0  # for Ray's own shutdown, after the driver is gone
POLL_S = 1.0  # how often the list of the driver's processes is refreshed


def start(driver_pid: int) -> subprocess.Popen:
    """The watcher for ``driver_pid``; keep the returned object (its stdin is the pipe) for the driver's life."""
    return subprocess.Popen([sys.executable, "-m", "snndist.dist.reaper", str(driver_pid)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def watch(driver_pid: int) -> None:
    import psutil

    known: dict[int, float] = {}  # pid -> start time: a pid reused later by another process is left alone
    driver = psutil.Process(driver_pid)
    while True:
        readable, _, _ = select.select([sys.stdin], [], [], POLL_S)
        if readable and not os.read(sys.stdin.fileno(), 1):
            break  # the pipe closed: the driver is gone
        try:
            for child in driver.children(recursive=True):
                if child.pid != os.getpid():
                    known.setdefault(child.pid, child.create_time())
        except psutil.Error:  # the driver is exiting: the pipe will say so
            pass
    time.sleep(GRACE_S)
    for pid, started in known.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == started:
                process.kill()
        except psutil.Error:
            pass


if __name__ == "__main__":
    watch(int(sys.argv[1]))
