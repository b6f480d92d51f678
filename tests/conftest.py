"""Test settings: strict promotion, several host devices for sharding tests, one shared Ray instance."""
import os

# Must be set before JAX starts: 4 CPU devices in this process (and in Ray
# workers, which inherit the environment).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def strict_dtypes():
    """Strict dtype promotion for the math. Not global: optax's Adam raises an
    int32 step count to a float power, which strict promotion refuses."""
    with jax.numpy_dtype_promotion("strict"):
        yield


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray instance of 4 CPUs in this process, shared by every test that drives RayRunner directly."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()
