"""GPU and TPU workers' scheduling on CPU machines: Ray grants the GPU and TPU resources nodes declare, and the
workers run JAX on the CPU under snndist's test switch (``cluster.ACCELERATORS_ON_CPU``)."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# A script: a Ray cluster of nodes that declare accelerators (its ``nodes``), ``cfg`` on it, ``extra`` results.
BEFORE = """
import json, os
os.environ["SNNDIST_TEST_ACCELERATORS_ON_CPU"] = "1"
import numpy as np, ray
from ray.cluster_utils import Cluster
from snndist.config import load_config
from snndist.dist.coordinator import RayRunner
from snndist.errors import ClusterError
extra = {}
"""
AFTER = """
runner = RayRunner(cfg, "accelerators", say=lambda line: None)
try:
    loss = float(runner.step(np.arange(32))["train/loss"])
    r = runner.reservation
    result = {"strategy": r.strategy, "accelerator": r.accelerator, "bundle": r.bundle, "infos": runner.infos,
              "loss": loss, **extra}
    with open(os.environ["RESULT_FILE"], "w") as out:
        json.dump(result, out)
finally:
    runner.close()
    ray.shutdown()
    nodes.shutdown()
"""


def _trained(cluster_and_config: str, tmp_path: Path) -> dict:
    """What the script with ``cluster_and_config`` found: the reservation, each worker's info, ``extra``. It
    writes them to a file: on stdout, Ray's forwarded worker logs can land in the middle of a line."""
    result = tmp_path / "result.json"
    done = subprocess.run([sys.executable, "-c", BEFORE + cluster_and_config + AFTER], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "RESULT_FILE": str(result)})
    assert done.returncode == 0 and result.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(result.read_text())


# A head of 4 GPUs and a node of 2: room on the head for both workers.
TWO_NODES_OF_TWO_GPUS = """
nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 4})
nodes.add_node(num_cpus=1, num_gpus=2)
ray.init(address=nodes.address, logging_level="ERROR")
cfg = load_config("configs/tutorial.yaml", ["train.workers=2", "cluster.devices_per_worker=2", "train.grad_sync=xla",
                                            "train.global_batch=32", "data.num_samples=64"])
"""


def test_gpu_workers_go_one_a_node_with_the_gpus_ray_gave_them(tmp_path):
    """Two workers of 2 GPUs go one a node (STRICT_SPREAD by default), though the head could hold both."""
    result = _trained(TWO_NODES_OF_TWO_GPUS, tmp_path)
    assert (result["accelerator"], result["strategy"]) == ("gpu", "STRICT_SPREAD")  # the default for GPUs
    assert result["bundle"] == {"CPU": 1, "GPU": 2}
    infos = result["infos"]
    assert len({i["node"] for i in infos}) == 2  # one worker a node, though the head could hold both
    for info in infos:
        assert len(info["gpu_ids"]) == 2
        assert info["cuda_visible_devices"] == ",".join(str(g) for g in info["gpu_ids"])  # set by Ray
        assert info["local_device_ids"] == [0, 1]  # what jax.distributed.initialize was given
        assert info["mesh"] == 4 and info["local_devices"] == 2  # the group formed: 2 workers x 2 devices
    assert result["loss"] > 0


# A v4-16 slice as Ray sees one: two hosts of 4 chips, the slice's name a resource and a label of each, worker
# 0's host alone with the TPU-v4-16-head resource. Worker 1's host joins first, so that bundle order is not rank.
ONE_SLICE_OF_TWO_HOSTS = """
nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
extra["host"] = {}
for worker in (1, 0):
    resources = {"TPU": 4, "slice-a": 1, **({"TPU-v4-16-head": 1} if worker == 0 else {})}
    node = nodes.add_node(num_cpus=1, resources=resources,
                          labels={"ray.io/tpu-slice-name": "slice-a", "ray.io/tpu-worker-id": str(worker)})
    extra["host"][worker] = node.node_id
ray.init(address=nodes.address, logging_level="ERROR")
common = ["train.grad_sync=xla", "train.global_batch=32", "data.num_samples=64", "cluster.tpu_pod_type=v4-16"]
extra["refused"] = {}
for name, sets in {"hosts": ["train.workers=3", "cluster.devices_per_worker=4"],
                   "chips": ["train.workers=2", "cluster.devices_per_worker=2"],
                   "type": ["train.workers=2", "cluster.devices_per_worker=4", "cluster.tpu_pod_type=v4-32"]}.items():
    try:
        RayRunner(load_config("configs/tutorial.yaml", common + sets), "refused", say=lambda line: None).close()
    except ClusterError as err:
        extra["refused"][name] = str(err)
cfg = load_config("configs/tutorial.yaml", common + ["train.workers=2", "cluster.devices_per_worker=4"])
"""


def test_tpu_workers_take_a_whole_slice_in_tpu_worker_order_and_what_cannot_fit_is_one_line(tmp_path):
    result = _trained(ONE_SLICE_OF_TWO_HOSTS, tmp_path)
    assert (result["accelerator"], result["strategy"]) == ("tpu", "STRICT_SPREAD")
    assert result["bundle"] == {"CPU": 1, "TPU": 4, "slice-a": 1}
    assert [i["node"] for i in sorted(result["infos"], key=lambda i: i["rank"])] == [result["host"]["0"],
                                                                                       result["host"]["1"]]
    assert all(i["mesh"] == 8 and i["local_devices"] == 4 for i in result["infos"])  # the group formed 2 x 4
    refused = result["refused"]
    expected = ("the TPU v4-16 slice slice-a is 2 host(s) of 4 chips: set train.workers=2 and "
                "cluster.devices_per_worker=4 (one worker a host, with all its chips)")
    assert refused["hosts"] == refused["chips"] == expected
    assert refused["type"] == ("cluster.tpu_pod_type=v4-32: the cluster has no TPU v4-32 slice (no node has the "
                               "TPU-v4-32-head resource) and no autoscaler to add one")
