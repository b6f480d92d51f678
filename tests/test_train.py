"""The single-process trainer: learns the seed's task, writes the run directory."""
import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from snndist.config import dump_yaml, load_config
from snndist.data import make_dataset
from snndist.data.loader import SampleLoader
from snndist.network import init_params, network_spec
from snndist.optim import lr_schedule, make_optimizer
from snndist.step import init_state, make_train_step


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "snndist", *args], capture_output=True, text=True, timeout=600)


def test_tutorial_learns_and_writes_the_run_dir(tmp_path):
    run = tmp_path / "run"
    result = _cli("train", "--config", "configs/tutorial.yaml", "--local", "--run-dir", str(run),
                  "--set", "train.steps=800", "--set", "logging.log_every=200")
    assert result.returncode == 0, result.stderr
    assert "step 800/800" in result.stdout

    resolved = load_config("configs/tutorial.yaml", ["train.steps=800", "logging.log_every=200"])
    assert (run / "config.yaml").read_text() == dump_yaml(resolved)

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == [200, 400, 600, 800]
    for key in ("train/loss", "train/accuracy", "spikes/rate_hz/hidden0", "spikes/silent_fraction/hidden0",
                "perf/step_time_s", "perf/samples_per_s", "train/lr", "train/grad_norm"):
        assert all(math.isfinite(r[key]) for r in train_rows), key
    assert train_rows[-1]["perf/samples_per_s"] == pytest.approx(256 / train_rows[-1]["perf/step_time_s"])

    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 800 and summary["wall_time_s"] > 0
    assert summary["train/loss"] < 0.5, "well below chance, ln 2 = 0.69"
    assert summary["train/loss"] < train_rows[0]["train/loss"]
    assert summary["eval/loss"] < 0.5 and summary["eval/accuracy"] > 0.75
    assert summary["eval/loss"] == pytest.approx(summary["train/loss"], rel=0.05)


def test_an_existing_run_dir_is_never_overwritten(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("precious: true\n")
    result = _cli("train", "--config", "configs/tutorial.yaml", "--local", "--run-dir", str(run))
    assert result.returncode == 2 and "already holds a run" in result.stderr
    assert (run / "config.yaml").read_text() == "precious: true\n"


def _setup(*overrides, batch=32):
    cfg = load_config("configs/tutorial.yaml", ["data.num_samples=64", *overrides])
    spec = network_spec(cfg)
    optimizer, schedule = make_optimizer(cfg.train)
    state = init_state(init_params(jax.random.PRNGKey(cfg.train.seed), cfg), optimizer)
    loader = SampleLoader(make_dataset(cfg.data, "train", 0), cfg.data)
    x, y = loader.load(np.arange(batch))
    return cfg, make_train_step(spec, optimizer, schedule), state, jax.tree.map(jnp.asarray, x), jnp.asarray(y)


def test_step_compiles_once():
    _, step, state, x, y = _setup()
    for _ in range(3):
        state, _ = step(state, x, y)
    assert step._cache_size() == 1


def test_non_finite_step_is_skipped():
    _, step, state, x, y = _setup()
    state, _ = step(state, x, y)
    poisoned = state._replace(params={**state.params, "readout": {
        "w": state.params["readout"]["w"].at[0, 0].set(jnp.nan), "b": state.params["readout"]["b"]}})
    before = jax.device_get(poisoned)
    after, metrics = step(poisoned, x, y)
    assert bool(metrics["train/step_skipped"]) and int(after.skipped) == 1 and int(after.step) == 2
    for a, b in zip(jax.tree.leaves(before.params) + jax.tree.leaves(before.opt_state)[1:],
                    jax.tree.leaves(after.params) + jax.tree.leaves(after.opt_state)[1:]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("overrides", [
    ["train.optimizer=adam", "train.grad_clip=0.01"],
    ["train.optimizer=adamw", "train.weight_decay=0.1", "train.lr_schedule=cosine", "train.warmup_steps=2"],
    ["train.optimizer=sgd", "train.momentum=0.9", "train.lr=0.5", "train.lr_schedule=linear"],
])
def test_optimizers_update_parameters(overrides):
    _, step, state, x, y = _setup("train.steps=10", *overrides)
    start = jax.device_get(state.params)
    for _ in range(3):
        state, metrics = step(state, x, y)
    assert not bool(metrics["train/step_skipped"])
    moved = [np.abs(a - b).max() for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(state.params))]
    assert max(moved) > 0


def test_lr_schedule_warms_up_then_decays():
    sched = lr_schedule(load_config(None, ["train.steps=10", "train.warmup_steps=4", "train.lr=1.0",
                                           "train.lr_schedule=linear"]).train)
    assert [round(float(sched(s)), 3) for s in (0, 2, 4, 7, 10)] == [0.0, 0.5, 1.0, 0.5, 0.0]


def test_deep_recurrent_network_with_rate_penalty_trains():
    _, step, state, x, y = _setup(
        "model.layers[0].recurrent=true", "model.layers[0].rate_reg={strength: 0.01, low_hz: 1, high_hz: 20}",
        "model.layers[1]={size: 6, recurrent: true, reset: hard}", "model.surrogate=fast_sigmoid")
    losses = []
    for _ in range(20):
        state, metrics = step(state, x, y)
        losses.append(float(metrics["train/loss"]))
    assert set(state.params) == {"hidden0", "hidden1", "readout"} and "v" in state.params["hidden1"]
    assert all(math.isfinite(l) for l in losses) and losses[-1] < losses[0]


def test_events_and_dense_encodings_train_alike():
    results = []
    for encoding in ("events", "dense"):
        _, step, state, x, y = _setup(f"data.encoding={encoding}")
        for _ in range(5):
            state, _ = step(state, x, y)
        results.append(jax.device_get(state.params))
    for a, b in zip(*map(jax.tree.leaves, results)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
