"""The coordinator: owns a distributed run from the driver. Ray only, no JAX.

Each step it plans the global batch into one shard per worker, sends each
worker its shard's indices, and either averages the gradients the workers
return (``train.grad_sync: coordinator``) or lets the workers' jitted step
average them with XLA collectives (``xla``). It satisfies the runner
``Runner`` interface (``snndist.train.runner``) that the training loop drives.
"""
from __future__ import annotations

import os
import re
import time

import numpy as np
import ray
from ray.util.placement_group import remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from snndist.config import Config
from snndist.data.order import plan_shards
from snndist.dist import cluster
from snndist.dist.worker import Worker
from snndist.errors import (ConfigError, JoinFailed, OutOfMemory, SnndistError, WorkerError, WorkerLost, one_line,
                            out_of_device_memory)
from snndist.track.metrics import Metrics, unstacked, weighted_mean, weighted_tree_mean

SHUTDOWN_TIMEOUT_S = 30
DRAIN_POLL_S = 2.0  # how often to ask Ray whether a node of this run is being drained
PEER_DEATH_GRACE_S = 5.0  # after a worker's error, how long to look for a dead peer that caused it


class RayRunner:
    """A ``Runner`` over ``train.workers`` Ray actors, each a ``Replica`` over its devices."""

    def __init__(self, cfg: Config, run_name: str, say=print, wait: bool = True):
        """``wait``: return once the workers are ready; False: they start while the caller goes on, until
        ``ready`` (which every call that needs them makes first)."""
        self.cfg, self.say, self.run_name = cfg, say, run_name
        self.started_ray = cluster.connect(cfg.cluster.address, cfg.train.workers, cfg.cluster.cpus_per_worker)
        # No address: the embedded instance (started here, or by a test or notebook); nothing joins it.
        self.local = not (cfg.cluster.address or os.environ.get("RAY_ADDRESS"))
        self.pending_s = 0.0  # waiting for the workers' resources, at the start and in recoveries
        self.reservation = None
        self.probe = None  # after shrinking: a pending placement group for the missing workers
        self.workers: list = []
        self.starting = False  # workers started and not yet waited for
        self.failed = False
        self.generation = 0  # worker groups started so far
        try:
            given = cluster.given_group(cfg.train, cfg.cluster)  # a sweep trial's, placed by Ray Tune
            self._start(given or self._waited(cluster.reserve, cfg.train, cfg.cluster))
            if wait:
                self.ready()
        except BaseException:
            self.close()
            raise

    def _start(self, reservation: cluster.Reservation) -> None:
        """Workers on ``reservation``'s bundles, on their way to being alive, joined and holding replicas."""
        self.reservation = reservation
        self._spawn(self.cfg.cluster.coordinator_port)
        self.starting = True

    def ready(self) -> None:
        """Wait for the workers ``_start`` started. A group that could not join (its port taken, say) is
        ended and started again on a free port; twice is a lost worker."""
        if not self.starting:
            return
        self.starting = False
        t = self.cfg.train
        # Starting takes process spawns and imports (a fresh node's, a busy one's), joining, then compiles.
        timeout = t.step_timeout_s + cluster.JOIN_TIMEOUT_S
        for again in (False, True):
            self._gather(self.alive, timeout=timeout)
            try:
                infos = self._gather(self.joined, timeout=timeout)
                break
            except (JoinFailed, WorkerLost) as err:  # gRPC may also crash the process that fails to bind
                self._end_actors()
                if again:
                    raise WorkerLost(None, f"{err}, again after starting the group anew") from None
                self.say(f"{err}; starting the worker group again, on a free port")
                self._spawn(None)
        self.infos = infos  # each worker's rank, node, devices (and for GPUs, what Ray gave it)
        self.nodes = {ray.get_runtime_context().get_node_id(), *(info["node"] for info in infos)}
        self.drain_checked, self.drain_warned = time.monotonic(), False
        self.local_devices = infos[0]["local_devices"]
        self.num_samples = infos[0]["num_samples"]
        self.say(f"{len(self.workers)} worker(s) x {self.local_devices} {infos[0]['platform']} device(s), "
                 f"gradient sync: {t.grad_sync}")
        self.steps_done = 0
        self.grad_sync_s = 0.0

    def _spawn(self, port: int | None) -> None:
        """One actor per bundle of the reservation, named by run, generation and rank, and their calls to
        start: ``alive`` (each its pid), then ``joined`` (each its replica over the jax.distributed group of
        all under ``xla`` sync, worker 0 hosting its coordinator at ``port``, else a free one)."""
        c, reservation = self.cfg.cluster, self.reservation
        run_name = self.run_name if not self.generation else f"{self.run_name}-g{self.generation}"
        self.generation += 1
        self.failed = False
        size = reservation.workers
        accelerator = reservation.accelerator
        actor = ray.remote(Worker)
        env = cluster.worker_env(accelerator, c.devices_per_worker, c.env, self.cfg.train.deterministic_ops,
                                 jax_on_cpu=os.environ.get(cluster.ACCELERATORS_ON_CPU) == "1")
        for rank in range(size):
            options = dict(
                name=f"snndist-{run_name}-rank{rank}", num_cpus=c.cpus_per_worker, max_restarts=0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    reservation.group, reservation.order[rank] if reservation.order else rank))
            if c.env:  # the user's variables from the process's start (a library path, say), not only before JAX
                options["runtime_env"] = {"env_vars": dict(c.env)}
            if accelerator == "gpu":
                options["num_gpus"] = c.devices_per_worker
            elif accelerator == "tpu":
                options["resources"] = {"TPU": c.devices_per_worker}
            self.workers.append(actor.options(**options).remote(self.cfg.to_dict(), rank, size, accelerator, env))
        self.alive = [w.pid.remote() for w in self.workers]
        address = self.workers[0].address.remote(port) if self.cfg.train.grad_sync == "xla" else None
        self.joined = [w.setup.remote(address) for w in self.workers]  # Ray passes address's value

    # ------------------------------------------------------------------ runner interface
    def steps(self, batches: list[np.ndarray], upcoming: np.ndarray | None = None,
              expected_s: float = 0.0) -> list[Metrics]:
        self.ready()
        plan = lambda indices: plan_shards(indices, len(self.workers), self.local_devices)
        shards = [plan(b) for b in batches]  # [step][rank]
        following = [None] * len(self.workers) if upcoming is None else plan(upcoming)
        if self.cfg.train.grad_sync == "coordinator" and len(self.workers) > 1:  # a host mean between steps
            return [self._coordinated_step(s, f) for s, f in zip(shards, [*shards[1:], following])]
        # One call per worker for all the steps; with XLA sync the collectives are in the jitted step.
        calls = [w.train_steps.remote([s[rank] for s in shards], following[rank])
                 for rank, w in enumerate(self.workers)]
        results = [unstacked(r) for r in self._gather(calls, timeout=self.cfg.train.step_timeout_s + 2 * expected_s)]
        self.steps_done += len(batches)
        # The step's metrics are the collective's, the same on every worker; what each read is its own.
        return [{**per_step[0], "count/dropped_events": sum(m["count/dropped_events"] for m in per_step)}
                for per_step in zip(*results)]

    def step(self, indices: np.ndarray, upcoming: np.ndarray | None = None) -> Metrics:
        """One step of ``steps``."""
        return self.steps([indices], upcoming)[0]

    def _coordinated_step(self, shards, following) -> Metrics:
        results = self._gather([w.grads.remote(s, f) for w, s, f in zip(self.workers, shards, following)])
        began = time.perf_counter()
        counts = [float(s.weights.sum()) for s in shards]
        grads = weighted_tree_mean([g for g, _ in results], counts)
        metrics = weighted_mean([m for _, m in results], counts)
        grads_ref = ray.put(grads)
        updates = self._gather([w.apply.remote(grads_ref, float(metrics["train/loss"])) for w in self.workers])
        metrics.update(updates[0])
        metrics["perf/grad_sync_s"] = time.perf_counter() - began
        self.steps_done += 1
        if self.steps_done % self.cfg.train.drift_check_every == 0:
            self.check_replicas()
        return metrics

    def evaluate(self, split: str) -> Metrics:
        self.ready()
        results = self._gather([w.evaluate.remote(split) for w in self.workers])
        if self.cfg.train.grad_sync == "xla":
            return results[0][0]  # the collective result, the same on every worker
        return weighted_mean([m for m, _ in results], [n for _, n in results])

    def gradient(self, indices: np.ndarray) -> dict:
        """The mean loss gradient over ``indices`` at the current parameters (no update)."""
        self.ready()
        shards = plan_shards(indices, len(self.workers), self.local_devices)
        results = self._gather([w.grads.remote(s) for w, s in zip(self.workers, shards)])
        if self.cfg.train.grad_sync == "xla":
            return results[0][0]  # computed over the global mesh: already the mean
        return weighted_tree_mean([g for g, _ in results], [float(s.weights.sum()) for s in shards])

    def params(self) -> dict:
        self.ready()
        return self._gather([self.workers[0].params.remote()], ranks=[0])[0]

    def trace(self, indices) -> dict:
        self.ready()
        return self._gather([self.workers[0].trace.remote(indices)], ranks=[0])[0]

    def get_state(self) -> dict:
        self.ready()
        return self._gather([self.workers[0].host_state.remote()], ranks=[0])[0]

    def set_state(self, state: dict) -> None:
        self.ready()
        ref = ray.put(state)
        self._gather([w.load_state.remote(ref) for w in self.workers])

    def restart(self) -> None:
        """A new worker group in place of one that lost a member (its state: a fresh init).

        All ``train.workers`` once their resources are back; an elastic run waits for them a while, then
        takes as many as can be placed, down to ``train.min_workers``, and ``grow`` takes them back later."""
        t, like = self.cfg.train, self.reservation
        self._stop_workers()
        fewest = t.workers if t.min_workers is None else t.min_workers
        reservation = self._waited(cluster.reserve_elastic, like, t, self.cfg.cluster, fewest)
        if reservation.workers < t.workers:
            self.say(f"going on with {reservation.workers} of train.workers={t.workers} workers (train.min_workers="
                     f"{fewest}), the same global batch; back to {t.workers} at a checkpoint when the resources "
                     "return")
            self.probe = cluster.probe(reservation, t)
        self._start(reservation)

    def grow(self) -> str | None:
        """At a checkpoint boundary: back to ``train.workers`` once the missing workers' resources are free."""
        if self.probe is None or not cluster.is_placed(self.probe):
            return None
        state, like = self.get_state(), self.reservation
        self._stop_workers()  # and the probe: its resources are the new group's
        self._start(self._waited(cluster.reserve_elastic, like, self.cfg.train, self.cfg.cluster, like.workers))
        self.set_state(state)
        if len(self.workers) < self.cfg.train.workers:  # taken by something else meanwhile: wait again
            self.probe = cluster.probe(self.reservation, self.cfg.train)
        return f"grew from {like.workers} to {len(self.workers)} workers at step {state['step']}"

    def _waited(self, reserve, *args) -> cluster.Reservation:
        """``reserve(*args, local, say)``, its wait added to ``pending_s``."""
        began = time.monotonic()
        try:
            return reserve(*args, self.local, self.say)
        finally:
            self.pending_s += time.monotonic() - began

    def topology(self) -> dict:
        t, c = self.cfg.train, self.cfg.cluster
        return {"workers": self.reservation.workers, "devices_per_worker": c.devices_per_worker,
                "grad_sync": t.grad_sync}

    def worker_pids(self) -> list[int]:
        self.ready()
        return self._gather([w.pid.remote() for w in self.workers])

    def check_visible(self, path: str, run_dir: str) -> None:
        """On a multi-node cluster, refuse a run directory (holding the new file ``path``) some worker cannot see."""
        if len([n for n in ray.nodes() if n["Alive"]]) < 2:
            return
        self.ready()
        missing = [r for r, seen in enumerate(self._gather([w.can_see.remote(path) for w in self.workers]))
                   if not seen]
        if missing:
            raise ConfigError(f"run directory {run_dir} is not visible from worker {missing[0]}'s node: on a "
                               "multi-node cluster it must be on a shared filesystem (or gs://)")

    def preemption_notice(self) -> str | None:
        """Ray's drain notice (a preemption, or the autoscaler taking the node) for a node this run uses.

        Asked of Ray's GCS at most every DRAIN_POLL_S: a few ms per ask, against steps of a few ms.
        """
        self.ready()
        now = time.monotonic()
        if now - self.drain_checked < DRAIN_POLL_S:
            return None
        self.drain_checked = now
        try:
            # Ray has no public call for this yet; Ray Data and Serve read the same one.
            draining = ray._private.state.state.get_draining_nodes()  # {node id: deadline in ms, 0: none}
        except Exception as err:  # the GCS restarting, say: training goes on, the next ask may answer
            if not self.drain_warned:
                self.say(f"warning: could not ask Ray for drain notices ({type(err).__name__}: {err})")
                self.drain_warned = True
            return None
        ours = sorted(self.nodes & set(draining))
        if not ours:
            return None
        deadline_ms = draining[ours[0]]
        left = f", {deadline_ms / 1000 - time.time():.0f} s before it goes" if deadline_ms else ""
        return f"Ray's drain notice for node {ours[0]}{left}"

    def check_replicas(self) -> None:
        """Every replica must hold bitwise the same parameters (coordinator sync)."""
        digests = self._gather([w.digest.remote() for w in self.workers])
        if len(set(digests)) > 1:
            odd = [r for r, d in enumerate(digests) if d != digests[0]]
            raise WorkerError(odd[0], f"replica parameters drifted from worker 0's at step {self.steps_done}")

    def close(self) -> None:
        """Leave the jax.distributed group, end the actors, free the resources; bounded in time."""
        self._stop_workers()
        if self.started_ray:
            ray.shutdown()

    def _stop_workers(self) -> None:
        # After a failure the others may be stuck in a collective (a peer died or hung) and would never
        # answer a polite shutdown.
        if self.workers and not self.failed:
            done, pending = ray.wait([w.shutdown.remote() for w in self.workers], num_returns=len(self.workers),
                                     timeout=SHUTDOWN_TIMEOUT_S)
            if pending:
                self.say(f"warning: {len(pending)} worker(s) did not leave the jax.distributed group within "
                         f"{SHUTDOWN_TIMEOUT_S} s (a peer probably died mid-collective); killing them")
        self._end_actors()
        if self.reservation is not None:
            cluster.release(self.reservation)
            self.reservation = None
        if self.probe is not None:
            remove_placement_group(self.probe)
            self.probe = None

    def _end_actors(self) -> None:
        """Kill the workers and wait until Ray reports them dead: ``ray.kill`` returns at once, and a new
        group must not find an old process still holding its devices (75% of a GPU, a TPU)."""
        for w in self.workers:
            ray.kill(w)
        # A call to an actor fails once Ray has it dead; its process has exited by then.
        calls = [w.pid.remote() for w in self.workers]
        _, alive = ray.wait(calls, num_returns=len(calls), timeout=SHUTDOWN_TIMEOUT_S)
        if alive:
            self.say(f"warning: {len(alive)} killed worker(s) not reported dead within {SHUTDOWN_TIMEOUT_S} s")
        self.workers = []

    # ------------------------------------------------------------------ failures
    def _gather(self, refs: list, ranks: list[int] | None = None, timeout: float | None = None) -> list:
        """``ray.get`` with the step timeout, turning failures into typed errors with the rank."""
        ranks = list(range(len(refs))) if ranks is None else ranks
        rank_of = {ref: r for ref, r in zip(refs, ranks)}
        timeout = self.cfg.train.step_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                self.failed = True
                late = sorted(rank_of[r] for r in pending)
                raise WorkerLost(late[0], f"no answer within {timeout:g} s (train.step_timeout_s="
                                          f"{self.cfg.train.step_timeout_s:g}; ranks {late} still busy)")
            try:
                ray.get(ready[0])
            except ray.exceptions.OutOfMemoryError as err:  # Ray's memory monitor killed the worker
                self.failed = True
                raise OutOfMemory(_killed_for_memory(rank_of[ready[0]], str(err))) from None
            except ray.exceptions.RayTaskError as err:
                self.failed = True
                cause = err.cause if err.cause is not None else err
                if isinstance(cause, SnndistError):  # bad data or config, said in the worker as here
                    raise cause from None
                if out_of_device_memory(cause):
                    raise OutOfMemory(f"worker {rank_of[ready[0]]} ran out of device memory "
                                      f"({one_line(cause, 200)}); {OutOfMemory.HINT}") from None
                # A peer that died mid-collective fails the others' all-reduce first ("Gloo all-reduce
                # failed: ... Connection reset by peer"): that is the peer's loss, not this worker's bug.
                raise (_lost_among(pending, rank_of, PEER_DEATH_GRACE_S)
                       or WorkerError(rank_of[ready[0]], f"{type(cause).__name__}: {one_line(cause)}")) from None
            except ray.exceptions.RayActorError as err:
                self.failed = True
                raise _lost(rank_of[ready[0]], err) from None
        return ray.get(refs)


def _lost(rank: int, err: Exception) -> WorkerLost:
    return WorkerLost(rank, f"{type(err).__name__}: {one_line(err, 200)}")


def _lost_among(pending: list, rank_of: dict, grace_s: float) -> WorkerLost | None:
    """The first of ``pending`` whose actor turns out dead within ``grace_s``; None if none does."""
    deadline = time.monotonic() + grace_s
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            return None
        try:
            ray.get(ready[0])
        except ray.exceptions.RayActorError as err:
            return _lost(rank_of[ready[0]], err)
        except ray.exceptions.RayError:
            continue
    return None


def _killed_for_memory(rank: int, report: str) -> str:
    """One line from Ray's memory monitor report: which worker, which node, how full, what it used."""
    node = re.search(r"Memory on the node \(IP: ([^,]+), ID: (\w+)\) was ([^\n]*?\))", report)
    used = re.search(r"actual memory used=([\d.]+\s*[KMGT]?B)", report)
    where = f" on node {node.group(1)} ({node.group(2)[:12]}), {node.group(3)}" if node else ""
    worker_used = f"; the worker used {used.group(1)}" if used else ""
    return (f"worker {rank} was killed by Ray for memory{where}{worker_used}; not replayed, it would run out "
            f"again: {OutOfMemory.HINT}")
