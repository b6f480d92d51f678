"""Test settings: strict promotion, several host devices for sharding tests, a Ray instance per test process."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

import pytest  # noqa: E402

# 4 CPU devices in this process only: a command the tests start gets one, as a user's does, and Ray workers
# get theirs from cluster.devices_per_worker.
jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_numpy_rank_promotion", "raise")

# The modules that take minutes (their Ray clusters, sweeps and jobs), slowest first: the test
# processes take modules in this order (pyproject's addopts), so that none ends on a long one alone.
SLOWEST_FIRST = ("test_distributed", "test_checkpoint", "test_multinode", "test_sweep", "test_jobs",
                 "test_fast_paths", "test_nir", "test_reliability", "test_accelerators", "test_datasets")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(SLOWEST_FIRST)))  # stable: a module's order stays


@pytest.fixture
def strict_dtypes():
    """Strict dtype promotion for the math. Not global: optax's Adam raises an
    int32 step count to a float power, which strict promotion refuses."""
    with jax.numpy_dtype_promotion("strict"):
        yield


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray instance of 4 CPUs in this process, shared by its tests that drive RayRunner directly."""
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()
