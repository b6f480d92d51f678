"""Joining a Ray cluster and reserving the workers' resources. No JAX here."""
from __future__ import annotations

import logging
import os
import socket
from typing import NamedTuple

import ray
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

from snndist.config import ClusterConfig, TrainConfig
from snndist.dist import reaper
from snndist.errors import ClusterError, one_line

_reaper = None  # the watcher of the local instance this process started, if it started one
PLACE_NOW_S = 5.0  # after losing workers: how long a smaller group may take to be placed on what is left


def connect(address: str | None) -> bool:
    """``ray.init`` at ``address``, RAY_ADDRESS, or a new local instance; True if we started one."""
    global _reaper
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address.startswith("http"):
        raise ClusterError(f"cluster.address={address!r} is a dashboard URL, which `snndist submit` takes; "
                           "training needs what ray.init takes: auto, HOST:6379 or ray://HOST:10001")
    if address and address != "auto":
        _probe(address)
    try:
        if address:
            ray.init(address=address, logging_level="WARNING", log_to_driver=True)
        else:
            # Ray says at every start of a local instance that token auth is on: nothing to act on here.
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
            # The dashboard process (Ray starts it even without the UI) answers on loopback only: an
            # open Ray dashboard or Jobs API runs anyone's code (CVE-2023-48022).
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, dashboard_host="127.0.0.1",
                     logging_level="WARNING")
            _reaper = reaper.start(os.getpid())  # the instance ends with this process, even if it is killed
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise ClusterError(f"cannot join the Ray cluster at {address or 'a new local instance'}: "
                           f"{one_line(err)}") from None
    return not address


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on an address nothing listens at: ``ray.init`` would retry for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"cluster address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {err.strerror or err}") from None


class Reservation(NamedTuple):
    group: object  # the placement group
    accelerator: str  # cpu | gpu | tpu: cluster.accelerator with auto resolved
    bundle: dict  # one worker's resources
    workers: int  # bundles in the group: train.workers, or fewer after losing nodes


def reserve(train: TrainConfig, cluster: ClusterConfig) -> Reservation:
    """A placement group of one bundle per worker; a clear error instead of waiting forever."""
    have = ray.cluster_resources()
    accelerator, bundle = _bundle(cluster, have)
    for resource, amount in bundle.items():
        need = amount * train.workers
        if need > have.get(resource, 0):
            field = "cluster.cpus_per_worker" if resource == "CPU" else "cluster.devices_per_worker"
            raise ClusterError(f"train.workers={train.workers} x {field}={amount} needs {need:g} {resource}; "
                               f"the cluster has {have.get(resource, 0):g}")
    group = _placed(train.workers, bundle, cluster.placement_strategy, cluster.resource_timeout_s)
    if group is None:
        raise ClusterError(f"{train.workers} workers of {bundle} ({cluster.placement_strategy}) could not be "
                           f"placed within cluster.resource_timeout_s={cluster.resource_timeout_s:g} s")
    return Reservation(group, accelerator, bundle, train.workers)


def reserve_elastic(like: Reservation, train: TrainConfig, cluster: ClusterConfig, fewest: int) -> Reservation:
    """After losing workers: bundles ``like`` the earlier ones for all ``train.workers`` if their resources
    come back within ``cluster.resource_timeout_s``, else for as many as can be placed now, down to ``fewest``."""
    accelerator, bundle, strategy = like.accelerator, like.bundle, cluster.placement_strategy
    for workers, wait_s in [(train.workers, cluster.resource_timeout_s),
                            *((n, PLACE_NOW_S) for n in range(train.workers - 1, fewest - 1, -1))]:
        group = _placed(workers, bundle, strategy, wait_s)
        if group is not None:
            return Reservation(group, accelerator, bundle, workers)
    raise ClusterError(f"waited cluster.resource_timeout_s={cluster.resource_timeout_s:g} s for the resources of "
                       f"{train.workers} workers of {bundle} ({strategy}) to come back, and fewer than "
                       f"train.min_workers={fewest} can be placed")


def probe(reservation: Reservation, train: TrainConfig, cluster: ClusterConfig):
    """A pending placement group for the workers a shrunken reservation lacks: ready once their
    resources are back (and, on an autoscaling cluster, asking for them)."""
    return placement_group([dict(reservation.bundle) for _ in range(train.workers - reservation.workers)],
                           strategy=cluster.placement_strategy)


def is_placed(group) -> bool:
    """Whether ``group`` holds its resources now, asked of the GCS (``group.wait(0)`` times out at once)."""
    return placement_group_table(group).get("state") == "CREATED"


def _bundle(cluster: ClusterConfig, have: dict) -> tuple[str, dict]:
    accelerator = cluster.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if have.get("GPU", 0) else "tpu" if have.get("TPU", 0) else "cpu"
    bundle = {"CPU": cluster.cpus_per_worker}
    if accelerator == "gpu":
        bundle["GPU"] = cluster.devices_per_worker
    elif accelerator == "tpu":
        bundle["TPU"] = cluster.devices_per_worker
    return accelerator, bundle


def _placed(workers: int, bundle: dict, strategy: str, wait_s: float):
    """A placement group of ``workers`` bundles once placed, or None (and nothing held) after ``wait_s``."""
    group = placement_group([dict(bundle) for _ in range(workers)], strategy=strategy)
    if not group.wait(timeout_seconds=wait_s):
        remove_placement_group(group)
        return None
    return group


def release(reservation: Reservation) -> None:
    remove_placement_group(reservation.group)


def worker_env(accelerator: str, devices: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment a worker needs before it imports JAX, over ``extra`` (``cluster.env``: NCCL_*, XLA_FLAGS,
    LIBTPU_INIT_ARGS, ...).

    CPU workers get ``devices`` host devices (after the user's own XLA_FLAGS). GPU workers see the GPUs Ray
    assigned them through CUDA_VISIBLE_DEVICES, which Ray sets; JAX numbers them from 0.
    """
    env = dict(extra or {})
    env["JAX_PLATFORMS"] = {"cpu": "cpu", "gpu": "cuda"}.get(accelerator, "tpu")
    if accelerator == "cpu":
        env["XLA_FLAGS"] = " ".join(filter(None, [env.get("XLA_FLAGS"),
                                                  f"--xla_force_host_platform_device_count={devices}"]))
    return env


def check_group(rank: int, workers: int, devices_per_worker: int, processes: int, devices: int) -> None:
    """After ``jax.distributed.initialize``: the group JAX sees is the one planned, or ClusterError.

    A group that did not form would leave each worker training alone, silently, under XLA sync.
    """
    if (processes, devices) != (workers, workers * devices_per_worker):
        raise ClusterError(f"worker {rank}: the jax.distributed group did not form as planned: JAX sees "
                           f"{processes} process(es) with {devices} device(s) in all, the run planned {workers} "
                           f"worker(s) x {devices_per_worker} device(s) (cluster.devices_per_worker)")


def pin_to_cores(rank: int, cpus: int) -> list[int]:
    """Confine this process to ``cpus`` cores chosen by ``rank``; XLA then sizes its thread pool to them.

    (XLA's CPU flags for single-threaded Eigen left it using every core here;
    the affinity mask is what its thread pool reads.)
    """
    available = sorted(os.sched_getaffinity(0))
    cores = [available[(rank * cpus + i) % len(available)] for i in range(cpus)]
    os.sched_setaffinity(0, cores)
    return cores
