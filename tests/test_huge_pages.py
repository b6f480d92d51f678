"""The snndist command and its Ray workers run with glibc's transparent huge pages for malloc."""
import os
import subprocess
import sys
from pathlib import Path

from snndist.huge_pages import add_huge_pages, glibc_has_tunable

REPO = Path(__file__).resolve().parents[1]

# Prints its environment's tunables and how many page faults a 64 MB malloc took to touch, then asks for the
# restart: a restarted process prints a second line.
TOUCH = """
import ctypes, os, resource
from snndist.huge_pages import restart_with_huge_pages
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
ctypes.memset(libc.malloc(64 << 20), 1, 64 << 20)
print(os.environ.get("GLIBC_TUNABLES", ""), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, flush=True)
restart_with_huge_pages()
"""

# A local Ray instance started by a restarted process, as the snndist command starts it: what its worker's
# process started with.
RAY_WORKER = """
import ray
from snndist.huge_pages import restart_with_huge_pages
restart_with_huge_pages()
ray.init(address="local", num_cpus=1, include_dashboard=False)
pid = ray.get(ray.remote(lambda: __import__("os").getpid()).remote())
tunable = b"GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in open(f"/proc/{pid}/environ", "rb").read().split(b"\\0")
ray.shutdown()
print(tunable)  # last: nothing of Ray's can print after it
"""


def test_the_tunable_is_added_once_beside_the_users_own_and_a_users_value_stands():
    env = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    add_huge_pages(env)
    add_huge_pages(env)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    mine = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}
    add_huge_pages(mine)
    assert mine["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=0"
    empty = {}
    add_huge_pages(empty)
    assert empty == {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


def _run(script: str, tunables: str | None = None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables is not None:
        env["GLIBC_TUNABLES"] = tunables
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def _touch(tunables: str | None = None) -> list[tuple[str, int]]:
    return [(line.rsplit(" ", 1)[0], int(line.rsplit(" ", 1)[1])) for line in _run(TOUCH, tunables)]


def test_a_process_restarts_once_with_the_tunable_and_maps_large_blocks_in_huge_pages():
    lines = _touch(None)
    if not glibc_has_tunable():  # nothing to restart for: one run, as it was
        assert [tunables for tunables, _ in lines] == [""]
        return
    (first, faults), (again, huge_faults) = lines  # the process ran twice, and stopped asking once it had it
    assert first == "" and again == "glibc.malloc.hugetlb=1"
    # In the kernel's madvise mode (the common default) huge pages come only where malloc asks for them; in
    # always (never) mode every process gets them (none does), whatever the tunable.
    if "[madvise]" in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text():
        assert faults >= (64 << 20) // 4096, "64 MB in 4 KB pages: a fault a page"
        assert huge_faults < faults / 20, (faults, huge_faults)
    users = _touch("glibc.malloc.hugetlb=0")  # the user's own value: no restart
    assert [tunables for tunables, _ in users] == ["glibc.malloc.hugetlb=0"]


def test_the_local_ray_instance_of_a_restarted_process_starts_its_workers_with_the_tunable():
    assert _run(RAY_WORKER)[-1] == str(glibc_has_tunable())
