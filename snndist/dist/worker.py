"""The Ray worker actor: a thin shell around one ``Replica``.

It imports JAX only inside its methods, once its constructor has set the
environment of ``cluster.worker_env`` (platform, host device count). Set
there rather than as a Ray ``runtime_env``, the actor can start in one of
the worker processes Ray starts ahead for the job: on 2 cores a worker is
ready in 0.4 s instead of 1.1 s.
"""
from __future__ import annotations

import os
import socket
import sys

import ray

from snndist.config import from_dict
from snndist.data.order import Shard
from snndist.dist.cluster import JOIN_TIMEOUT_S, check_group, local_gpu_ids, pin_to_cores
from snndist.errors import JoinFailed, one_line
from snndist.track.metrics import stacked
from snndist.xla_flags import add_xla_flags


def use_environment(env: dict[str, str]) -> None:
    """``env`` in this process, for the JAX it has yet to start."""
    # Ray gives an actor a process of its own that has run nothing else; one that had started JAX would
    # silently keep its platform and device count.
    if "jax" in sys.modules:
        raise RuntimeError("this worker process imported JAX before its environment was set")
    os.environ.update(env)
    add_xla_flags()


class Worker:
    def __init__(self, config: dict, rank: int, workers: int, accelerator: str, env: dict[str, str]):
        use_environment(env)
        self.cfg = from_dict(config).validate()
        self.rank, self.workers, self.accelerator = rank, workers, accelerator
        self.replica = None
        self.distributed = False
        if accelerator == "cpu" and self.cfg.cluster.pin_cpus:
            pin_to_cores(rank, self.cfg.cluster.cpus_per_worker)

    def address(self, port: int | None = None) -> str:
        """``ip:port`` for the ``jax.distributed`` coordinator (worker 0 hosts it): ``port``, else a free one.

        A free port is found, released, then bound by JAX: something else may take it in between (then the
        join fails and the coordinator starts the group again)."""
        if port is None:
            with socket.socket() as s:
                s.bind(("", 0))
                port = s.getsockname()[1]
        return f"{ray.util.get_node_ip_address()}:{port}"

    def setup(self, coordinator_address: str | None = None) -> dict:
        """Build the replica: over this process's devices, or over every worker's (XLA sync)."""
        import jax

        from snndist.train.compile_cache import use_compile_cache
        from snndist.train.replica import Replica
        from snndist.train.step import Layout

        use_compile_cache()

        local_ids = None
        if self.accelerator == "gpu":
            local_ids = local_gpu_ids(self.cfg.cluster.devices_per_worker, ray.get_gpu_ids(), dict(os.environ))
        if coordinator_address:
            try:
                jax.distributed.initialize(coordinator_address, num_processes=self.workers, process_id=self.rank,
                                           local_device_ids=local_ids, initialization_timeout=JOIN_TIMEOUT_S)
            except Exception as err:  # noqa: BLE001 - e.g. "Failed to start RPC server": the port is taken
                raise JoinFailed(f"worker {self.rank} could not join the jax.distributed group at "
                                 f"{coordinator_address}: {one_line(err, 200)}") from None
            self.distributed = True
            check_group(self.rank, self.workers, self.cfg.cluster.devices_per_worker, jax.process_count(),
                        jax.device_count())
            devices = jax.devices()
        else:
            devices = [d for d in jax.local_devices() if local_ids is None or d.id in local_ids]
        self.replica = Replica(self.cfg, Layout.over(devices))
        info = {"rank": self.rank, "node": ray.get_runtime_context().get_node_id(),
                "local_devices": self.replica.local_devices, "mesh": self.replica.layout.size,
                "platform": devices[0].platform, "num_samples": self.replica.num_samples("train")}
        if self.accelerator == "gpu":
            info.update(gpu_ids=ray.get_gpu_ids(), cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
                        local_device_ids=local_ids)
        return info

    def train_steps(self, shards: list[Shard], upcoming: Shard | None = None) -> dict:
        """The steps' metrics, ``stacked``: Ray moves a dozen arrays a call, not a dozen a step."""
        from snndist.train.step import to_host

        return stacked(to_host(self.replica.train_steps(shards, upcoming)))  # one wait, after the last step

    def grads(self, shard: Shard, upcoming: Shard | None = None):
        return self.replica.grads(shard, upcoming)

    def apply(self, grads: dict, loss: float) -> dict:
        return self.replica.apply(grads, loss)

    def evaluate(self, split: str):
        return self.replica.evaluate(split, self.rank, self.workers)

    def digest(self) -> str:
        return self.replica.digest()

    def params(self) -> dict:
        return self.replica.params()

    def trace(self, indices) -> dict:
        return self.replica.trace(indices)

    def host_state(self) -> dict:
        return self.replica.host_state()

    def load_state(self, state: dict) -> None:
        self.replica.load_state(state)

    def pid(self) -> int:
        return os.getpid()

    def can_see(self, path: str) -> bool:
        return os.path.exists(path)

    def shutdown(self) -> None:
        if self.distributed:
            import jax

            jax.distributed.shutdown()
            self.distributed = False
