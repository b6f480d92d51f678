"""The single-process trainer: learns the seed's task, writes the run directory."""
import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snndist.config import dump_yaml, load_config
from snndist.data.order import plan_shards
from snndist.run.loop import fit
from snndist.store.checkpoint import Checkpointer
from snndist.track.tracker import JsonlTracker
from snndist.train.local import LocalRunner
from snndist.train.optim import lr_schedule
from snndist.train.replica import Replica
from snndist.train.step import Layout


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


class _CallSizes:
    """A runner that records how many steps each call asked for."""

    def __init__(self, runner):
        self.runner, self.sizes = runner, []

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def steps(self, batches, upcoming=None, expected_s=0.0):
        self.sizes.append(len(batches))
        return self.runner.steps(batches, upcoming, expected_s)


def test_several_steps_a_call_train_as_one_step_a_call(tmp_path):
    runs = {}
    for per_call in (1, 7):
        cfg = load_config("configs/tutorial.yaml", [
            "data.num_samples=64", "train.global_batch=32", "train.steps=30", "logging.log_every=10",
            "checkpoint.every_steps=15", "train.eval_every=0", f"train.steps_per_call={per_call}"])
        run = tmp_path / str(per_call)
        run.mkdir()
        runner = _CallSizes(LocalRunner(cfg))
        checkpointer, tracker = Checkpointer(run, cfg.checkpoint), JsonlTracker(run)
        try:
            fit(cfg, runner, tracker, checkpointer, say=lambda _: None)
        finally:
            tracker.finish()
            checkpointer.close()
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        logged = [{k: v for k, v in r.items() if not k.startswith(("perf/", "ckpt/"))} for r in rows]  # not timings
        runs[per_call] = runner.sizes, runner.params(), logged
    assert runs[1][0] == [1] * 30
    # One step a call until the pace is known, then 7, each call ending at log (10, 20, 30) and checkpoint (15)
    # steps.
    assert runs[7][0] == [1, 1, 7, 1, 5, 5, 7, 3]
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(runs[1][1]), jax.tree.leaves(runs[7][1])))
    assert runs[1][2] == runs[7][2] and [r["step"] for r in runs[7][2] if "train/loss" in r] == [10, 20, 30]


def _replica(*overrides, batch=32, devices=1):
    cfg = load_config("configs/tutorial.yaml", ["data.num_samples=64", *overrides])
    replica = Replica(cfg, Layout.over(jax.local_devices()[:devices]))
    return replica, plan_shards(np.arange(batch), 1, devices)[0]


@pytest.mark.parametrize("encoding", ["dense", "events"])
def test_a_split_kept_on_the_devices_trains_and_evaluates_as_from_the_host(encoding):
    # The default on accelerators: once the host cache holds the split whole, batches are gathered on the
    # devices. The same rows reach the same step: bitwise the same training.
    cfg = load_config("configs/tutorial.yaml", ["data.num_samples=64", f"data.encoding={encoding}"])
    devices = min(2, len(jax.local_devices()))
    order = np.random.default_rng(3).permutation(np.tile(np.arange(64), 2)).reshape(4, 32)
    runs = []
    for on_device in (False, True):
        replica = Replica(cfg, Layout.over(jax.local_devices()[:devices]), data_on_device=on_device)
        losses = [float(replica.train_step(plan_shards(rows, 1, devices)[0])["train/loss"]) for rows in order]
        runs.append((losses, replica.params(), replica.evaluate("train")[0], replica))
    (losses0, params0, eval0, host), (losses1, params1, eval1, device) = runs
    assert not host._resident and set(device._resident) == {"train"}, "the device path must have been taken"
    assert losses1 == losses0
    for a, b in zip(jax.tree.leaves(params1), jax.tree.leaves(params0)):
        np.testing.assert_array_equal(a, b)
    assert eval1.keys() == eval0.keys()
    for key in (k for k in eval0 if not k.startswith("perf/")):
        np.testing.assert_array_equal(eval1[key], eval0[key], err_msg=key)


@pytest.mark.parametrize("precision,expected", [("highest", "HIGHEST"), ("default", "DEFAULT")])
def test_every_product_of_the_step_has_the_configured_precision(precision, expected):
    # On accelerators JAX's default runs f32 products as TF32 or bf16 passes; the config's choice must reach
    # every product, the hand-written backward pass's too.
    replica, shard = _replica(f"train.matmul_precision={precision}", "model.layers[0].recurrent=true")
    step = replica._train_step.lower(replica.state, *replica._global_batch(shard, "train")).as_text()
    products = [line for line in step.splitlines() if "stablehlo.dot_general" in line]
    assert len(products) >= 6, step  # input, recurrent and readout products, forward and backward
    assert all(f"precision = [{expected}, {expected}]" in line for line in products), products


def test_steps_compile_once():
    replica, shard = _replica()
    for _ in range(3):
        replica.train_step(shard)
        grads, metrics = replica.grads(shard)
        replica.apply(grads, float(metrics["train/loss"]))
        replica.evaluate("train")
    for name in ("_train_step", "_grad_step", "_apply_step", "_eval_step"):
        assert getattr(replica, name)._cache_size() == 1, name


def test_non_finite_step_is_skipped():
    replica, shard = _replica()
    replica.train_step(shard)
    params = replica.state.params
    poisoned = {**params, "readout": {**params["readout"], "w": params["readout"]["w"].at[0, 0].set(jnp.nan)}}
    replica.state = replica.state._replace(params=poisoned)
    before = jax.device_get(replica.state)
    metrics = replica.train_step(shard)
    after = replica.state
    assert bool(metrics["train/step_skipped"]) and int(after.skipped) == 1 and int(after.step) == 2
    for a, b in zip(jax.tree.leaves(before.params) + jax.tree.leaves(before.opt_state),
                    jax.tree.leaves(after.params) + jax.tree.leaves(after.opt_state)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("overrides", [
    ["train.optimizer=adam", "train.grad_clip=0.01"],
    ["train.optimizer=adamw", "train.weight_decay=0.1", "train.lr_schedule=cosine", "train.warmup_steps=2"],
    ["train.optimizer=sgd", "train.momentum=0.9", "train.lr=0.5", "train.lr_schedule=linear"],
])
def test_optimizers_update_parameters(overrides):
    replica, shard = _replica("train.steps=10", *overrides)
    start = replica.params()
    for _ in range(3):
        metrics = replica.train_step(shard)
    assert not bool(metrics["train/step_skipped"])
    moved = [np.abs(a - b).max() for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(replica.params()))]
    assert max(moved) > 0


def test_lr_schedule_warms_up_then_decays():
    sched = lr_schedule(load_config(None, ["train.steps=10", "train.warmup_steps=4", "train.lr=1.0",
                                           "train.lr_schedule=linear"]).train)
    assert [round(float(sched(s)), 3) for s in (0, 2, 4, 7, 10)] == [0.0, 0.5, 1.0, 0.5, 0.0]


def test_deep_recurrent_network_with_rate_penalty_trains():
    replica, shard = _replica(
        "model.layers[0].recurrent=true", "model.layers[0].rate_reg={strength: 0.01, low_hz: 1, high_hz: 20}",
        "model.layers[1]={size: 6, recurrent: true, reset: hard}", "model.surrogate=fast_sigmoid")
    losses = [float(replica.train_step(shard)["train/loss"]) for _ in range(20)]
    params = replica.params()
    assert set(params) == {"hidden0", "hidden1", "readout"} and "v" in params["hidden1"]
    assert all(math.isfinite(l) for l in losses) and losses[-1] < losses[0]


def test_events_and_dense_encodings_train_alike():
    results = []
    for encoding in ("events", "dense"):
        replica, shard = _replica(f"data.encoding={encoding}")
        for _ in range(5):
            replica.train_step(shard)
        results.append(replica.params())
    for a, b in zip(*map(jax.tree.leaves, results)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
