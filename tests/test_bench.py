"""``snndist bench`` and the FLOP floor it reports."""
import json
import os
import subprocess
import sys

import pytest

from snndist.config import load_config
from snndist.model.flops import train_step_flops
from snndist.train.spec import network_spec

CLI = [sys.executable, "-m", "snndist", "bench"]


def test_the_floor_counts_every_dense_product_of_a_step():
    flops = train_step_flops(network_spec(load_config("configs/bench_shd.yaml")), 256)
    rows = 256 * 100
    assert flops["input_fwd"] == flops["input_bwd"] == 2 * rows * 700 * 256  # dW only: input spikes need no grad
    assert flops["recurrent_bwd"] == 2 * flops["recurrent_fwd"] == 4 * rows * 256 * 256
    assert sum(flops.values()) / 1e9 == pytest.approx(29.2028, abs=1e-4)
    deep = train_step_flops(network_spec(load_config("configs/tutorial.yaml", ["model.layers[1]={size: 3}"])), 10)
    rows = 10 * 200
    assert deep["input_bwd"] == 2 * rows * 100 * 4 + 2 * 2 * rows * 4 * 3  # the second layer's input needs a grad


def test_bench_reports_a_configs_speed_as_json_and_as_a_table():
    done = subprocess.run([*CLI, "--config", "configs/tutorial.yaml", "--set", "data.timesteps=50", "--set", "data.encoding=dense", "--steps", "3",
                           "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert {"ms_per_step", "samples_per_s", "compile_s", "peak_memory_bytes", "flop_floor_ms", "device"} <= set(result)
    assert result["samples_per_s"] == pytest.approx(256 / (result["ms_per_step"] / 1000))
    floor = sum(train_step_flops(network_spec(load_config("configs/tutorial.yaml", ["data.timesteps=50"])),
                                 256).values())
    assert result["step_gflop"] == pytest.approx(floor / 1e9)
    assert result["flop_floor_ms"] == pytest.approx(floor / (result["matmul_gflop_per_s"] * 1e9) * 1000)
    # Per device: at least its share of one dense batch of inputs (bool); a plan that leaves them out is wrong.
    devices = int(result["device"].rsplit(" x ", 1)[1])
    assert result["peak_memory_bytes"] > 256 * 50 * 100 / devices
    assert result["device"].startswith("cpu") and "compiling the train step" in done.stderr


def test_bench_refuses_bad_input_in_one_line():
    done = subprocess.run([*CLI, "--config", "configs/tutorial.yaml", "--steps", "0"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.strip() == "snndist: error: --steps 0: must be >= 1", done.stderr
    done = subprocess.run([*CLI, "--config", "configs/tutorial.yaml", "--set", "train.global_batch=0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "train.global_batch" in done.stderr and len(done.stderr.splitlines()) == 1


def test_a_second_process_loads_the_compiled_step_from_the_cache(tmp_path):
    cache = tmp_path / "jax-cache"  # snndist's default: under $SNNDIST_LOCAL_DIR
    env = {**os.environ, "SNNDIST_LOCAL_DIR": str(tmp_path)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    command = [*CLI, "--config", "configs/tutorial.yaml", "--set", "data.timesteps=20", "--steps", "1", "--json"]
    entries = []
    for _ in range(2):
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr
        entries.append(sorted(p.name for p in cache.glob("jit_train_step-*")))
    assert entries[0], "the first process writes its train step"
    assert entries[1] == entries[0], "the second finds it under the same keys, so it compiles nothing new"
