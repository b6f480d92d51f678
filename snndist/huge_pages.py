"""Transparent huge pages for the large buffers XLA's CPU runtime allocates at every step.

XLA's CPU runtime allocates an execution's temporaries as one block and
frees it afterwards: for the SHD-scale train step, 75 MB. A block that size
is mapped fresh at every step, so every step faults it in 4 KB page by 4 KB
page: 18,400 page faults a step. glibc's ``glibc.malloc.hugetlb=1`` tunable
has malloc ask the kernel for transparent huge pages where it maps memory
(the kernel's common ``madvise`` mode): 2 MB pages, 40-600 faults a step,
and half the kernel time (37-42 ms a step -> 17-22 ms; BENCHMARKS.md).
Nothing else changes.

glibc reads its tunables when a process starts. So the ``snndist`` command
starts itself again once with the tunable set, before it imports anything
large; the local Ray instance it starts, and so its workers, inherit it (the
image's ``Dockerfile`` sets it for a cluster's nodes). A
``glibc.malloc.hugetlb`` the user sets in ``GLIBC_TUNABLES`` is kept as it
is; elsewhere than glibc 2.35 or later on Linux nothing is done.
"""
from __future__ import annotations

import os
import platform
import sys
from typing import Mapping, MutableMapping

TUNABLE = "glibc.malloc.hugetlb"


def _named(env: Mapping[str, str]) -> bool:
    return any(item.split("=", 1)[0] == TUNABLE for item in env.get("GLIBC_TUNABLES", "").split(":"))


def add_huge_pages(env: MutableMapping[str, str]) -> None:
    """Add ``glibc.malloc.hugetlb=1`` to ``env["GLIBC_TUNABLES"]`` unless it names the tunable already."""
    if not _named(env):
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), f"{TUNABLE}=1"]))


def glibc_has_tunable() -> bool:
    """Whether this process's C library is glibc 2.35 or later (which reads the tunable) on Linux."""
    library, version = platform.libc_ver()
    if sys.platform != "linux" or library != "glibc":
        return False
    return tuple(int(part) for part in version.split(".")[:2]) >= (2, 35)


def restart_with_huge_pages() -> None:
    """Start this process's command line again with the tunable set, once; return where there is nothing
    to do (set already, or a C library without it)."""
    if _named(os.environ) or not glibc_has_tunable():
        return
    add_huge_pages(os.environ)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
