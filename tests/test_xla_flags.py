"""snndist's XLA flags: added on import unless the user names them, known to this XLA, and in effect."""
import os
import subprocess
import sys
from pathlib import Path

from snndist.xla_flags import FLAGS, add_xla_flags

REPO = Path(__file__).resolve().parents[1]
REGION_ANALYSIS = "--xla_cpu_copy_insertion_use_region_analysis"

# Compiles the gradient of the SHD network's loss (a recurrent layer, in-loop products) and prints how many
# copies XLA's CPU compiler left in it.
COUNT_COPIES = """
import snndist
import os, jax, jax.numpy as jnp
from snndist.config import load_config
from snndist.model.network import init_params, loss_fn
from snndist.train.spec import network_spec
spec = network_spec(load_config("configs/bench_shd.yaml", ["data.timesteps=20", "data.num_inputs=40",
                                                           "model.layers[0].size=16"]))
params = init_params(jax.random.PRNGKey(0), spec)
x = jax.random.bernoulli(jax.random.PRNGKey(1), 0.1, (4, 20, 40))
grad = jax.jit(jax.grad(lambda p: loss_fn(p, x, jnp.arange(4) % 20, spec)[0]))
print(os.environ["XLA_FLAGS"])
print(grad.lower(params).compile().as_text().count(" copy("))
"""


def test_flags_are_appended_once_and_a_users_own_value_stands():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    add_xla_flags(env)
    add_xla_flags(env)
    assert env["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=4",
                                        *(f"{k}={v}" for k, v in FLAGS.items())]
    mine = {"XLA_FLAGS": f"{REGION_ANALYSIS}=false"}
    add_xla_flags(mine)
    assert mine["XLA_FLAGS"] == f"{REGION_ANALYSIS}=false"
    empty = {}
    add_xla_flags(empty)
    assert empty["XLA_FLAGS"] == f"{REGION_ANALYSIS}=true"


def _copies(xla_flags: str) -> tuple[str, int]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags}
    done = subprocess.run([sys.executable, "-c", COUNT_COPIES], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]  # XLA stops at startup on a flag it does not know
    flags, copies = done.stdout.split("\n")[-3:-1]
    return flags, int(copies)


def test_importing_snndist_gives_xla_the_flags_and_they_remove_copies_from_the_step():
    flags, copies = _copies("--xla_force_host_platform_device_count=1")
    assert f"{REGION_ANALYSIS}=true" in flags.split()
    users_flags, users_copies = _copies(f"{REGION_ANALYSIS}=false")
    assert users_flags == f"{REGION_ANALYSIS}=false"  # the user's own value stands
    assert copies < users_copies, (copies, users_copies)
