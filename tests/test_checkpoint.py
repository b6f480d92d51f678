"""Checkpoints and recovery with real Orbax and real Ray: no step lost, no run silently restarted."""
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest
import ray

from snndist.config import load_config
from snndist.dist.coordinator import RayRunner
from snndist.run.loop import fit, restore_newest
from snndist.store.checkpoint import Checkpointer
from snndist.track.tracker import JsonlTracker
from snndist.train.local import LocalRunner

CLI = [sys.executable, "-m", "snndist"]
SHORT = ["train.steps=60", "checkpoint.every_steps=10", "logging.log_every=10", "train.global_batch=64",
         "data.num_samples=128", "logging.wandb.mode=disabled"]  # W&B's part of a resume: test_monitoring


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def _train(run_dir, *extra, overrides=SHORT, env=None):
    return subprocess.run([*CLI, "train", "--config", "configs/tutorial.yaml", "--run-dir", str(run_dir),
                           *_sets(overrides), *extra], capture_output=True, text=True, timeout=600, env=env)


def _params(run_dir, step=None):
    """The parameters of a checkpoint, read with plain Orbax as the README shows."""
    manager = ocp.CheckpointManager(Path(run_dir, "checkpoints").absolute(), item_names=("params",))
    step = manager.latest_step() if step is None else step
    params = manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore()))["params"]
    return step, params


def _flat(params):
    return np.concatenate([np.ravel(params[k][n]) for k in sorted(params) for n in sorted(params[k])])


def _assert_bitwise(a, b):
    assert set(a) == set(b)
    for k in a:
        for n in a[k]:
            np.testing.assert_array_equal(a[k][n], b[k][n], err_msg=f"{k}/{n}")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("ckpt") / "whole"
    result = _train(run, "--local")
    assert result.returncode == 0, result.stderr
    return _params(run)


def test_readme_snippet_restores_params_without_snndist(uninterrupted):
    text = Path("README.md").read_text()
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert "import orbax.checkpoint as ocp" in snippet and "snndist" not in snippet.replace("RUN_DIR", "")
    step, params = uninterrupted
    assert step == 60 and set(params) == {"hidden0", "readout"} and params["hidden0"]["w"].shape == (100, 4)


def test_sigterm_then_resume_is_bitwise_exact(tmp_path, uninterrupted):
    run = tmp_path / "run"
    proc = subprocess.Popen([*CLI, "train", "--config", "configs/tutorial.yaml", "--run-dir", str(run), "--local",
                             *_sets(SHORT[:-3] + ["logging.log_every=1", "train.global_batch=64",
                                                  "data.num_samples=128"])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("step 30/60"):
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    stopped_at = int(re.search(r"stopped by signal SIGTERM at step (\d+)", err).group(1))
    assert 30 <= stopped_at < 60
    assert _params(run)[0] == stopped_at, "the checkpoint of the stop committed before the exit"

    # Restoring replaces a fresh replica's state by the checkpoint's, which differs from it.
    runner = LocalRunner(load_config(run / "config.yaml"), devices=1)
    fresh = runner.get_state()
    checkpointer = Checkpointer(run, load_config(run / "config.yaml").checkpoint, say=lambda _: None)
    meta = restore_newest(checkpointer, runner)
    checkpointer.close()
    restored = runner.get_state()
    assert meta["step"] == restored["step"] == stopped_at and fresh["step"] == 0
    assert not np.array_equal(_flat(fresh["params"]), _flat(restored["params"]))
    _assert_bitwise(restored["params"], _params(run)[1])

    resumed = subprocess.run([*CLI, "train", "--resume", str(run), "--local"], capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at step {stopped_at}" in resumed.stdout
    step, params = _params(run)
    assert step == 60
    _assert_bitwise(params, uninterrupted[1])
    # The resumed session went on from the checkpoint: every step logged once, none again from step 1.
    logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [s for s in logged] == list(range(1, 61)) + [60], "steps 1..60, then the final eval row"


def test_resume_onto_another_topology(tmp_path, uninterrupted):
    run = tmp_path / "run"
    first = _train(run, "--local", overrides=[*SHORT, "train.steps=30"])
    assert first.returncode == 0, first.stderr
    # The rest on 2 Ray workers (xla sync, 2 host devices each) instead of 1 local device.
    resumed = subprocess.run([*CLI, "train", "--resume", str(run), *_sets([
        "train.steps=60", "train.workers=2", "train.grad_sync=xla", "cluster.devices_per_worker=2"])],
        capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at step 30" in resumed.stdout and "2 worker(s) x 2 cpu device(s)" in resumed.stdout
    step, params = _params(run)
    ref = _flat(uninterrupted[1])
    assert step == 60 and np.linalg.norm(_flat(params) - ref) / np.linalg.norm(ref) < 1e-5


def test_resume_refuses_math_changes(tmp_path):
    run = tmp_path / "run"
    assert _train(run, "--local", overrides=[*SHORT, "train.steps=10"]).returncode == 0
    result = subprocess.run([*CLI, "train", "--resume", str(run), "--local", "--set", "train.lr=0.1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--set train.lr: cannot change on --resume" in result.stderr
    again = _train(run, "--local")
    assert again.returncode == 2 and "already holds a run" in again.stderr


def _truncate_newest(run, step):
    files = sorted((run / "checkpoints" / str(step) / "params").rglob("ocdbt.process_0/d/*"),
                   key=lambda p: p.stat().st_size)
    victim = files[-1]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    return victim


def test_torn_checkpoint_falls_back_and_deletes_nothing(tmp_path):
    run = tmp_path / "run"
    # keep=10: no checkpoint leaves by the keep policy, so anything missing would be our fault.
    assert _train(run, "--local", overrides=[*SHORT, "train.steps=30", "checkpoint.keep=10"]).returncode == 0
    _truncate_newest(run, 30)
    resumed = subprocess.run([*CLI, "train", "--resume", str(run), "--local", "--set", "train.steps=40"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    out = resumed.stdout
    assert re.search(r"warning: checkpoint \S+/checkpoints/30 is unreadable", out)
    assert "resumed at step 20" in out
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "10" in kept and "20" in kept and "40" in kept, kept
    assert any(name.startswith("30.unreadable-") for name in kept), "the bad one is set aside, not deleted"


def test_all_checkpoints_broken_is_an_error(tmp_path):
    run = tmp_path / "run"
    assert _train(run, "--local", overrides=[*SHORT, "train.steps=20"]).returncode == 0
    for step in (10, 20):
        _truncate_newest(run, step)
    result = subprocess.run([*CLI, "train", "--resume", str(run), "--local"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 2, result.stderr
    errors = [l for l in result.stderr.splitlines() if l.startswith("snndist: error:")]
    assert len(errors) == 1 and "none of the checkpoints [10, 20] can be read" in errors[0]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["10", "20"], "nothing moved or deleted"
    restarted = subprocess.run([*CLI, "train", "--resume", str(run), "--local", "--restart"], capture_output=True,
                               text=True, timeout=600)
    assert restarted.returncode == 0, restarted.stderr
    assert any(p.name.startswith("checkpoints.before-restart-") for p in run.iterdir())


def test_nan_steps_are_skipped_and_counted(tmp_path):
    run = tmp_path / "run"
    result = _train(run, "--local", overrides=[*SHORT, "train.steps=20", "train.debug_nan_steps=[5, 12]"])
    assert result.returncode == 0, result.stderr
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/skipped_steps"] for r in rows if "train/skipped_steps" in r] == [1.0, 2.0]


def test_only_nans_stops_and_keeps_the_last_finite_checkpoint(tmp_path):
    run = tmp_path / "run"
    nan_steps = list(range(21, 60))
    result = _train(run, "--local", overrides=[*SHORT, f"train.debug_nan_steps={nan_steps}",
                                               "train.max_bad_steps=5"])
    assert result.returncode == 1
    assert "5 steps in a row had a non-finite loss or gradient" in result.stderr
    step, params = _params(run)
    assert step == 20 and np.isfinite(_flat(params)).all()


class _KillingRunner:
    """Passes calls through to a RayRunner; SIGKILLs a worker process before some of them."""

    def __init__(self, runner, kill_before: dict[int, int]):
        self.runner, self.kill_before, self.calls = runner, dict(kill_before), 0

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def steps(self, batches, upcoming=None, expected_s=0.0):
        self.calls += 1
        rank = self.kill_before.pop(self.calls, None)
        if rank is not None:
            import os
            os.kill(self.runner.worker_pids()[rank], signal.SIGKILL)
        return self.runner.steps(batches, upcoming, expected_s)


def _ray_fit(run_dir, sync, kill_before=None):
    cfg = load_config("configs/tutorial.yaml", [*SHORT, "train.steps=24", "checkpoint.every_steps=5",
                                                "train.workers=2", f"train.grad_sync={sync}",
                                                "train.steps_per_call=1"])  # calls are steps
    lines = []
    runner = RayRunner(cfg, Path(run_dir).name, say=lines.append)
    driven = _KillingRunner(runner, kill_before) if kill_before else runner
    run_dir.mkdir()
    checkpointer, tracker = Checkpointer(run_dir, cfg.checkpoint, say=lines.append), JsonlTracker(run_dir)
    try:
        summary = fit(cfg, driven, tracker, checkpointer, say=lines.append)
        return runner.get_state()["params"], summary, lines
    finally:
        tracker.finish()
        checkpointer.close()
        runner.close()


@pytest.fixture(scope="module")
def ray_reference(local_ray, tmp_path_factory):
    """The uninterrupted 2-worker run (coordinator sync; xla sync gives it to 1e-5, test_distributed)."""
    return _ray_fit(tmp_path_factory.mktemp("ray") / "whole", "coordinator")[0]


@pytest.mark.parametrize("sync", ["coordinator", "xla"])
def test_killed_workers_are_replaced_and_the_result_is_unchanged(ray_reference, tmp_path, sync):
    reference = ray_reference
    params, summary, lines = _ray_fit(tmp_path / "killed", sync, kill_before={8: 1, 17: 0})
    recoveries = [l for l in lines if l.startswith("recovered:")]
    assert len(recoveries) == 2, lines
    # Call 8 is step 8 (7 done, checkpoint at 5). Replays count as calls: call 17 is step 14 (13 done).
    assert "rank 1" in recoveries[0] and "restored step 5, replaying 2 step(s)" in recoveries[0]
    assert "rank 0" in recoveries[1] and "restored step 10, replaying 3 step(s)" in recoveries[1]
    assert "ActorDiedError" in recoveries[0] and "ActorDiedError" in recoveries[1]
    assert summary["system/recoveries"] == 2 and summary["step"] == 24
    if sync == "coordinator":
        _assert_bitwise(params, reference)
    else:
        assert np.linalg.norm(_flat(params) - _flat(reference)) / np.linalg.norm(_flat(reference)) < 1e-5
