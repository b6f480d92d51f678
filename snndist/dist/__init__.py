"""The Ray edge: joining a cluster, the worker actor, the coordinator that drives a
distributed run, and Ray jobs (submit, list, status, logs, stop)."""
from snndist._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "RayRunner": "coordinator", "Worker": "worker", "JobClient": "job_client",
    "add_job_commands": "job_commands",
})
