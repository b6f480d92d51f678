"""Joining a Ray cluster and reserving the workers' resources. No JAX here."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from typing import Callable, NamedTuple

import ray
from ray.autoscaler.sdk import request_resources
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

from snndist.config import TPU_CHIPS_PER_WORKER, ClusterConfig, TrainConfig
from snndist.dist import node_agent, reaper
from snndist.errors import ClusterError, one_line

_reaper = None  # the watcher of the local instance this process started, if it started one
PLACE_NOW_S = 5.0  # after losing workers: how long a smaller group may take to be placed on what is left
LOCAL_WAIT_S = 60.0  # cluster.resource_timeout_s unset, on the embedded local instance: nothing will join it
ELASTIC_WAIT_S = 60.0  # unset, elastic: how long lost workers' resources are awaited before going on with fewer
FIRST_REPORT_S, REPORT_EVERY_S = 5.0, 30.0  # while waiting for resources: when to say what for, and what is free
JOIN_TIMEOUT_S = 300  # placed workers joining their jax.distributed group: process starts, imports, a slow node


LOCAL_INSTANCE_CONFIG = {
    # Ray runs its workers at nice 15, to keep its own daemons responsive on a busy node. Here the workers
    # are the job: at 15, each burst of the driver's logging or W&B's process stalls a step's threads (the
    # tutorial's 3000 steps: 0.3 s longer on 2 cores).
    "worker_niceness": 0,
    # The raylet's first connection to its object store often comes before the store listens; it then
    # waited a whole retry interval (1 s of ray.init, in 2 of 6 starts). The same 10 s in all, in steps of
    # 0.1 s.
    "raylet_client_connect_timeout_milliseconds": 100,
    "raylet_client_num_connect_attempts": 100,
}


def connect(address: str | None, workers: int, cpus_per_worker: int) -> bool:
    """``ray.init`` at ``address``, RAY_ADDRESS, or a new local instance; True if we started one.

    A local instance that could not hold ``workers`` of ``cpus_per_worker`` is refused before it starts.
    """
    global _reaper
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address:
        refuse_unfittable(workers, {"CPU": cpus_per_worker}, {"CPU": os.cpu_count()})
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
            # "local": without it, ray.init joins the cluster the last `ray start` here wrote down, if that
            # one still runs. No dashboard, so no Jobs API either: an open one runs anyone's code
            # (CVE-2023-48022).
            with _lean_local_instance():
                ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING",
                         _system_config=LOCAL_INSTANCE_CONFIG)
            _reaper = reaper.start(os.getpid())  # the instance ends with this process, even if it is killed
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise ClusterError(f"cannot join the Ray cluster at {address or 'a new local instance'}: "
                           f"{one_line(err)}") from None
    return not address


@contextlib.contextmanager
def _lean_local_instance():
    """While it is entered, a new Ray instance starts neither its API server nor its autoscaler's monitor,
    and its node agent is ``node_agent``, which serves nothing.

    The instance ``connect`` starts serves one run of this process: no job is submitted to it, nothing reads
    its state API or scrapes its metrics, it has nothing to autoscale. ``ray.init`` has no switch for any of
    these (``include_dashboard=False`` still starts the API server, and ray.init waits until it answers).
    On 2 cores, without the API server and the monitor ray.init took 3.0-3.1 s instead of 4.1-4.6, and
    with ``node_agent`` for Ray's dashboard agent (whose modules the raylet waited for) 1.9 s. Ray's agent
    also served job submissions on the node's address (behind Ray's token alone); nothing listens there
    now. Which agent to start Ray decides by importing the dashboard's packages (aiohttp and more, 0.25 s
    before the raylet starts); told they are missing, it skips that import.
    """
    from ray._private import ray_constants, services, utils  # Ray's own; it has no public hook for these
    from ray._private.node import Node

    start_api_server, start_monitor = Node.start_api_server, Node.start_monitor
    dependency_error = utils.get_dashboard_dependency_error
    python_command = services._build_python_executable_command_memory_profileable

    def agent_command(component: str, session_dir: str, unbuffered: bool = True) -> list[str]:
        if component == ray_constants.PROCESS_TYPE_DASHBOARD_AGENT:  # Ray's agent arguments follow
            return [sys.executable, "-u", node_agent.__file__]
        return python_command(component, session_dir, unbuffered)

    Node.start_api_server = lambda self, **kwargs: None
    Node.start_monitor = lambda self: None
    utils.get_dashboard_dependency_error = lambda: ImportError("a run's own instance needs no dashboard")
    services._build_python_executable_command_memory_profileable = agent_command
    try:
        yield
    finally:
        Node.start_api_server, Node.start_monitor = start_api_server, start_monitor
        utils.get_dashboard_dependency_error = dependency_error
        services._build_python_executable_command_memory_profileable = python_command


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
    strategy: str  # cluster.placement_strategy with null resolved
    owned: bool = True  # False: the group this process runs in (a sweep trial's), its owner's to remove
    order: tuple = ()  # rank -> bundle index (a TPU slice's: TPU worker order); empty: rank i on bundle i
    head: object = None  # a TPU slice's: the group on its worker-0 host, held so that no other run takes it


def resource_wait_s(cluster: ClusterConfig, local: bool) -> float | None:
    """How long to wait for the workers' resources: ``cluster.resource_timeout_s``, else by where the run is.

    On a cluster (None: no limit) capacity frees up as other jobs end and nodes join, an autoscaler's after
    minutes of booting; on the embedded local instance nothing ever joins.
    """
    if cluster.resource_timeout_s is not None:
        return cluster.resource_timeout_s
    return LOCAL_WAIT_S if local else None


def reserve(train: TrainConfig, cluster: ClusterConfig, local: bool, say: Callable[[str], None]) -> Reservation:
    """A placement group of one bundle per worker, once placed.

    A cluster without an autoscaler that cannot hold the workers even when idle is refused at once; otherwise
    this waits (``resource_wait_s``), saying every REPORT_EVERY_S what for and what is free.
    """
    have = ray.cluster_resources()
    accelerator, bundle = worker_bundle(cluster, have)
    if accelerator == "tpu" and cluster.devices_per_worker not in TPU_CHIPS_PER_WORKER:
        raise ClusterError(f"cluster.devices_per_worker={cluster.devices_per_worker}: a TPU worker takes 1, 2, 4 or "
                           "8 chips of its host (what Ray grants)")
    if accelerator == "tpu" and cluster.tpu_pod_type:
        return reserve_slice(train, cluster, bundle, local, say)
    autoscaler = not local and has_autoscaler()
    if not autoscaler:
        refuse_unfittable(train.workers, bundle, have)
    wait_s = resource_wait_s(cluster, local)
    strategy = placement_strategy(cluster, accelerator)
    group = _placed(train.workers, bundle, strategy, wait_s, autoscaler, say)
    if group is None:
        raise ClusterError(f"{train.workers} workers x {bundle_text(bundle)} ({strategy}) could "
                           f"not be placed within cluster.resource_timeout_s={wait_s:g} s")
    return Reservation(group, accelerator, bundle, train.workers, strategy)


SLICE_NAME_LABEL, WORKER_ID_LABEL = "ray.io/tpu-slice-name", "ray.io/tpu-worker-id"  # Ray's TPU node labels


def reserve_slice(train: TrainConfig, cluster: ClusterConfig, bundle: dict, local: bool,
                  say: Callable[[str], None]) -> Reservation:
    """A whole TPU slice of type ``cluster.tpu_pod_type``, as Ray Train reserves one: first its worker-0 host
    (the only one with the ``TPU-<type>-head`` resource), then a bundle on each host of that slice (the
    slice's name is a resource of each), one worker a host, ranks in TPU worker order."""
    pod = cluster.tpu_pod_type
    head_resource = f"TPU-{pod}-head"
    autoscaler = not local and has_autoscaler()
    if not autoscaler and not ray.cluster_resources().get(head_resource):
        raise ClusterError(f"cluster.tpu_pod_type={pod}: the cluster has no TPU {pod} slice (no node has the "
                           f"{head_resource} resource) and no autoscaler to add one")
    wait_s = resource_wait_s(cluster, local)
    head = _placed(1, {head_resource: 1}, "PACK", wait_s, autoscaler, say)
    if head is None:
        raise ClusterError(f"no TPU {pod} slice came free within cluster.resource_timeout_s={wait_s:g} s")
    try:
        nodes = _alive_nodes()
        first = nodes[_bundle_nodes(head)[0]]
        name = first.get("Labels", {}).get(SLICE_NAME_LABEL)
        if not name:
            raise ClusterError(f"node {first['NodeID'][:12]} has the {head_resource} resource but no "
                               f"{SLICE_NAME_LABEL} label: Ray did not see it as a TPU host")
        hosts = [n for n in nodes.values() if n["Resources"].get(name)]
        chips = first["Resources"].get("TPU", 0)
        if (train.workers, cluster.devices_per_worker) != (len(hosts), chips):
            raise ClusterError(f"the TPU {pod} slice {name} is {len(hosts)} host(s) of {chips:g} chips: set "
                               f"train.workers={len(hosts)} and cluster.devices_per_worker={chips:g} (one worker a "
                               "host, with all its chips)")
        on_slice = {**bundle, name: 1}
        group = _placed(train.workers, on_slice, "STRICT_SPREAD", wait_s, autoscaler, say)
        if group is None:
            raise ClusterError(f"the hosts of TPU slice {name} did not come free within "
                               f"cluster.resource_timeout_s={wait_s:g} s")
    except BaseException:
        remove_placement_group(head)
        raise
    return Reservation(group, "tpu", on_slice, train.workers, "STRICT_SPREAD", order=tpu_rank_order(group),
                       head=head)


def tpu_rank_order(group) -> tuple[int, ...]:
    """The group's bundle indices by the TPU worker id of their hosts: rank i on TPU worker i, so that JAX's
    process ids are the slice's own."""
    nodes, placed = _alive_nodes(), _bundle_nodes(group)
    return tuple(sorted(placed, key=lambda b: int(nodes[placed[b]].get("Labels", {}).get(WORKER_ID_LABEL, b))))


def _alive_nodes() -> dict[str, dict]:
    return {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}


def _bundle_nodes(group) -> dict[int, str]:
    """{bundle index: node id} of a placed group."""
    return {int(b): node for b, node in placement_group_table(group)["bundles_to_node_id"].items()}


def given_group(train: TrainConfig, cluster: ClusterConfig) -> Reservation | None:
    """The placement group this process was started in, taking none of its resources: a sweep trial's, one
    bundle per worker (after the trial's own empty one), which Ray Tune placed and removes. None otherwise
    (a group whose resources this process uses is not the workers'; they get one of their own)."""
    from ray.util import get_current_placement_group

    group = get_current_placement_group()
    if group is None or ray.get_runtime_context().get_assigned_resources():
        return None
    accelerator, bundle = worker_bundle(cluster, ray.cluster_resources())
    if len(group.bundle_specs) != train.workers:
        raise ClusterError(f"this process runs in a placement group of {len(group.bundle_specs)} bundle(s), "
                           f"not one per worker (train.workers={train.workers})")
    return Reservation(group, accelerator, bundle, train.workers, placement_strategy(cluster, accelerator),
                       owned=False)


def refuse_unfittable(workers: int, bundle: dict, have: dict) -> None:
    """ClusterError if ``workers`` bundles need more of a resource than ``have`` holds in all."""
    for resource, amount in bundle.items():
        need = amount * workers
        if need > have.get(resource, 0):
            field = "cluster.cpus_per_worker" if resource == "CPU" else "cluster.devices_per_worker"
            raise ClusterError(f"train.workers={workers} x {field}={amount:g} needs {need:g} {resource}; "
                               f"the cluster has {have.get(resource, 0):g} and no autoscaler to add more")


def reserve_elastic(like: Reservation, train: TrainConfig, cluster: ClusterConfig, fewest: int, local: bool,
                    say: Callable[[str], None]) -> Reservation:
    """After losing workers: bundles ``like`` the earlier ones for all ``train.workers`` once their resources
    are back; an elastic run (``fewest`` < ``train.workers``) waits for them at most ``cluster.resource_timeout_s``
    (unset: ELASTIC_WAIT_S), then takes as many as can be placed now, down to ``fewest``. A sweep trial's
    group (Tune holds it) is used again as it is; a TPU slice is reserved whole again, in TPU worker order."""
    if not like.owned:
        return like
    if like.head is not None:
        return reserve(train, cluster, local, say)
    accelerator, bundle, strategy = like.accelerator, like.bundle, like.strategy
    wait_s = resource_wait_s(cluster, local)
    if fewest < train.workers and wait_s is None:
        wait_s = ELASTIC_WAIT_S
    autoscaler = not local and has_autoscaler()
    for workers, wait in [(train.workers, wait_s),
                          *((n, PLACE_NOW_S) for n in range(train.workers - 1, fewest - 1, -1))]:
        group = _placed(workers, bundle, strategy, wait, autoscaler, say)
        if group is not None:
            return Reservation(group, accelerator, bundle, workers, strategy)
    raise ClusterError(f"waited cluster.resource_timeout_s={wait_s:g} s for the resources of "
                       f"{train.workers} workers x {bundle_text(bundle)} ({strategy}) to come back, and fewer than "
                       f"train.min_workers={fewest} can be placed")


def probe(reservation: Reservation, train: TrainConfig):
    """A pending placement group for the workers a shrunken reservation lacks: ready once their
    resources are back (and, on an autoscaling cluster, asking for them)."""
    return placement_group([dict(reservation.bundle) for _ in range(train.workers - reservation.workers)],
                           strategy=reservation.strategy)


def is_placed(group) -> bool:
    """Whether ``group`` holds its resources now, asked of the GCS (``group.wait(0)`` times out at once)."""
    return placement_group_table(group).get("state") == "CREATED"


def placement_strategy(cluster: ClusterConfig, accelerator: str) -> str:
    """``cluster.placement_strategy``, or by default STRICT_SPREAD for GPU workers (a node each), else PACK."""
    return cluster.placement_strategy or ("STRICT_SPREAD" if accelerator == "gpu" else "PACK")


def worker_bundle(cluster: ClusterConfig, have: dict) -> tuple[str, dict]:
    """The accelerator (``auto`` resolved by what the cluster ``have``s) and one worker's resources."""
    accelerator = cluster.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if have.get("GPU", 0) else "tpu" if have.get("TPU", 0) else "cpu"
    bundle = {"CPU": cluster.cpus_per_worker}
    if accelerator == "gpu":
        bundle["GPU"] = cluster.devices_per_worker
    elif accelerator == "tpu":
        bundle["TPU"] = cluster.devices_per_worker
    return accelerator, bundle


def _placed(workers: int, bundle: dict, strategy: str, wait_s: float | None, autoscaler: bool,
            say: Callable[[str], None]):
    """A placement group of ``workers`` bundles once placed, or None (and nothing held) after ``wait_s``
    (None: no limit). A ``waiting_line`` after FIRST_REPORT_S of waiting, then every REPORT_EVERY_S; with an
    ``autoscaler`` it is asked for the bundles while this waits."""
    bundles = [dict(bundle) for _ in range(workers)]
    group = placement_group(bundles, strategy=strategy)
    began, asked, said, report = time.monotonic(), False, False, FIRST_REPORT_S
    try:
        while True:
            left = None if wait_s is None else wait_s - (time.monotonic() - began)
            if left is not None and left <= 0:
                remove_placement_group(group)
                return None
            if group.wait(timeout_seconds=report if left is None else min(report, left)):
                if said:
                    say(f"placed {workers} x {bundle_text(bundle)} after {time.monotonic() - began:.0f} s of waiting")
                return group
            if autoscaler and not asked:
                request_resources(bundles=bundles)
                asked = True
            say(waiting_line(workers, bundle, strategy, time.monotonic() - began, ray.available_resources(),
                             ray.cluster_resources(), asked))
            said, report = True, REPORT_EVERY_S
    finally:
        if asked:  # a standing request keeps nodes up; the placed group is demand of its own now
            request_resources(bundles=[])


def bundle_text(bundle: dict) -> str:
    """``{CPU: 1, GPU: 1}``: a worker's resources as lines and job listings show them."""
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in bundle.items()) + "}"


def waiting_line(workers: int, bundle: dict, strategy: str, waited_s: float, free: dict, total: dict,
                 asked: bool) -> str:
    """What a run waits for and what is free; ``snndist jobs`` reads the part up to ``free``."""
    frees = ", ".join(f"{free.get(k, 0):g}" + (f" {k}" if len(bundle) > 1 else "") for k in bundle)
    of = ", ".join(f"{free.get(k, 0):g} of {total.get(k, 0):g} {k}" for k in bundle)
    autoscaler = "asked the autoscaler for them" if asked else "no autoscaler to ask: waiting for other jobs to end"
    return (f"waiting for {workers} x {bundle_text(bundle)} ({strategy}), {frees} free "
            f"({of}), {waited_s:.0f} s so far; {autoscaler}")


def has_autoscaler() -> bool:
    """Whether an autoscaler can add nodes to this cluster (``ray up``, KubeRay with autoscaling).

    Ray's monitor runs on every head; without an autoscaling config it reports each node as a read-only
    type of its own, ``node_<id>``. Autoscaler v2 (KubeRay's) always can.
    """
    from ray.autoscaler.v2.utils import is_autoscaler_v2
    from ray.experimental.internal_kv import _internal_kv_get

    try:
        if is_autoscaler_v2(fetch_from_server=True):
            return True
        status = json.loads(_internal_kv_get("__autoscaling_status") or b"{}")  # what `ray status` reads
    except Exception:  # noqa: BLE001 - no answer: treat the cluster as fixed
        return False
    return launches_nodes(status)


def launches_nodes(status: dict) -> bool:
    """Whether the autoscaler status v1 writes names node types of a config (not just read-only ones)."""
    types = ((status.get("autoscaler_report") or {}).get("node_type_mapping") or {}).values()
    return any(not t.startswith("node_") for t in types)


def release(reservation: Reservation) -> None:
    if reservation.owned:
        remove_placement_group(reservation.group)
    if reservation.head is not None:
        remove_placement_group(reservation.head)


GPU_DETERMINISTIC_OPS = "--xla_gpu_deterministic_ops=true"  # train.deterministic_ops on GPU workers
# Tests only, in the coordinator's environment: workers scheduled on Ray's GPU or TPU resources (which Ray
# grants on any machine a node declares them on) run JAX on the CPU, with as many host devices.
ACCELERATORS_ON_CPU = "SNNDIST_TEST_ACCELERATORS_ON_CPU"


def worker_env(accelerator: str, devices: int, extra: dict[str, str] | None = None,
               deterministic: bool = False, jax_on_cpu: bool = False) -> dict[str, str]:
    """Environment a worker needs before it imports JAX, over ``extra`` (``cluster.env``: NCCL_*, XLA_FLAGS,
    LIBTPU_INIT_ARGS, ...).

    CPU workers get ``devices`` host devices (after the user's own XLA_FLAGS). GPU workers see the GPUs Ray
    assigned them through CUDA_VISIBLE_DEVICES, which Ray sets; JAX numbers them from 0. ``deterministic``
    (``train.deterministic_ops``) turns on XLA's deterministic GPU algorithms. ``jax_on_cpu``: the tests'
    ACCELERATORS_ON_CPU.
    """
    env = dict(extra or {})
    platform = "cpu" if jax_on_cpu else accelerator
    env["JAX_PLATFORMS"] = {"cpu": "cpu", "gpu": "cuda"}.get(platform, "tpu")
    flag = {"cpu": f"--xla_force_host_platform_device_count={devices}",
            "gpu": GPU_DETERMINISTIC_OPS if deterministic else None}.get(platform)
    if flag:
        env["XLA_FLAGS"] = " ".join(filter(None, [env.get("XLA_FLAGS"), flag]))
    return env


def local_gpu_ids(devices: int, assigned: list, env: dict) -> list[int]:
    """A GPU worker's GPUs as JAX numbers them in its process: 0..``devices``-1 where Ray set
    CUDA_VISIBLE_DEVICES to the ``assigned`` ones (``ray.get_gpu_ids()``); those ids themselves where Ray was
    told not to (RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES), since JAX then sees every GPU of the node."""
    if env.get("RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES", "0") not in ("", "0"):
        return sorted(int(i) for i in assigned)
    return list(range(devices))


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
