"""snndist sweep: Ray Tune over the tutorial on the embedded local Ray, stopped and resumed; ASHA's early
stops, failing trials, best.yaml trained again, each trial's W&B run; bad sweep files."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from snndist.cli import main
from snndist.config import load_config
from snndist.sweep.space import read_sweep
from wandb_records import config_of, inspect_records

REPO = Path(__file__).resolve().parents[1]
# 8 trials: 4 points of the space, each healthy and with two NaN steps (which the run stops at, as
# train.max_bad_steps=2 says: a failing trial). ASHA keeps a quarter at step 100, its only rung before 400.
SWEEP = {
    "name": "tutorial-sweep",
    "metric": "eval/accuracy", "mode": "max", "num_samples": 4, "seed": 1,
    "set": ["train.steps=400", "train.eval_every=100", "checkpoint.every_steps=100", "logging.log_every=100",
            "train.max_bad_steps=2", "logging.wandb.images_every=0"],
    "scheduler": {"kind": "asha", "grace_period": 100, "reduction_factor": 4},
    "space": {"train.lr": {"loguniform": [1.0e-3, 3.0e-2]},
              "model.layers[0].tau_mem_ms": {"uniform": [10.0, 40.0]},
              "train.debug_nan_steps": {"grid": [[], [3, 4]]}},
}


def _env() -> dict:
    return {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}


def _state(sweep_dir: Path) -> list[dict]:
    try:
        return json.loads((sweep_dir / "trials.json").read_text())["trials"]
    except (OSError, ValueError):  # not written yet
        return []


def _mid_run(sweep_dir: Path, rows: list[dict]) -> list[str]:
    """Running trials past ASHA's only rung (step 100) with the checkpoint of step 200, and 200 steps to go."""
    checkpoints = {r["id"]: sweep_dir / "trials" / r["id"] / "checkpoints" for r in rows if r["status"] == "running"}
    return [trial for trial, saved in checkpoints.items() if (saved / "200").is_dir() and not (saved / "300").exists()]


@pytest.fixture(scope="module")
def stopped_and_resumed(tmp_path_factory):
    """The sweep, stopped by SIGTERM once a trial has ended and another is mid-run (held still), then resumed."""
    root = tmp_path_factory.mktemp("sweep")
    space, sweep_dir = root / "space.yaml", root / "sweep"
    space.write_text(yaml.safe_dump(SWEEP))
    first = subprocess.Popen([sys.executable, "-m", "snndist", "sweep", "--config", "configs/tutorial.yaml",
                              "--space", str(space), "--run-dir", str(sweep_dir)], cwd=REPO, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, mid = time.monotonic() + 300, []
    while time.monotonic() < deadline and first.poll() is None:
        rows = _state(sweep_dir)
        mid = _mid_run(sweep_dir, rows)
        if mid and any(r["status"] in ("done", "stopped early", "error") for r in rows):
            break
        time.sleep(0.05)
    assert mid, f"the sweep ended before a trial was mid-run: {first.communicate(timeout=60)[0][-3000:]}"
    # Held still, so that it cannot finish before the stop reaches it: cut off mid-run for sure.
    frozen = json.loads((sweep_dir / "trials" / mid[0] / ".snndist-lease.json").read_text())["pid"]
    os.kill(frozen, signal.SIGSTOP)
    first.send_signal(signal.SIGTERM)
    first_out = first.communicate(timeout=120)[0]
    with contextlib.suppress(ProcessLookupError):  # Ray kills it when its instance goes; if not, it goes now
        os.kill(frozen, signal.SIGKILL)
    before = {r["id"]: r for r in _state(sweep_dir)}
    ended_before = {i: (sweep_dir / "trials" / i / "metrics.jsonl").read_bytes()
                    for i, r in before.items() if r["status"] in ("done", "stopped early", "error")}
    started_before = {p.name for p in (sweep_dir / "trials").iterdir()}
    saved_before = {i for i in started_before
                    if any(p.name.isdigit() for p in (sweep_dir / "trials" / i / "checkpoints").glob("*"))}
    second = subprocess.run([sys.executable, "-m", "snndist", "sweep", "--resume", str(sweep_dir)], cwd=REPO,
                            env=_env(), capture_output=True, text=True, timeout=600)
    return dict(sweep_dir=sweep_dir, first=first, first_out=first_out, mid=mid[0], ended_before=ended_before,
                started_before=started_before, saved_before=saved_before, second=second,
                rows={r["id"]: r for r in _state(sweep_dir)})


def test_a_stopped_sweep_resumes_and_every_trial_ends_once(stopped_and_resumed):
    s = stopped_and_resumed
    assert s["first"].returncode == 75, s["first_out"][-3000:]
    assert f"continue with snndist sweep --resume {s['sweep_dir']}" in s["first_out"]
    assert s["second"].returncode == 0, s["second"].stdout[-3000:] + s["second"].stderr[-3000:]
    rows = s["rows"]
    assert len(rows) == 8 and all(r["status"] in ("done", "stopped early", "error") for r in rows.values())
    # Ended before the stop: not trained again.
    for trial, metrics in s["ended_before"].items():
        assert (s["sweep_dir"] / "trials" / trial / "metrics.jsonl").read_bytes() == metrics, trial
        assert f"trial {trial} started" not in s["second"].stdout
    # Mid-run at the stop: went on from its checkpoint, in the same W&B run.
    assert s["mid"] not in s["ended_before"] and f"[{s['mid']}] resumed at step" in s["second"].stdout
    # One W&B run a trial: none started over, but those stopped before their first checkpoint.
    for trial in set(rows) - (s["started_before"] - s["saved_before"] - set(s["ended_before"])):
        runs = {p.name.rsplit("-", 1)[-1] for p in (s["sweep_dir"] / "trials" / trial / "wandb").glob("offline-run-*")}
        assert len(runs) == 1, (trial, runs)


def test_asha_stops_trials_early_and_failing_trials_are_reported(stopped_and_resumed):
    rows, out = stopped_and_resumed["rows"], stopped_and_resumed["second"].stdout
    early = [r for r in rows.values() if r["status"] == "stopped early"]
    done = [r for r in rows.values() if r["status"] == "done"]
    failed = [r for r in rows.values() if r["status"] == "error"]
    assert early and done and all(r["step"] < 400 for r in early) and all(r["step"] == 400 for r in done)
    assert {tuple(r["params"]["train.debug_nan_steps"]) for r in failed} == {(3, 4)} and len(failed) == 4
    assert all(r["error"].startswith("RunFailed: 2 steps in a row had a non-finite loss") for r in failed)
    for r in early:  # the table: the step each stopped at
        assert any(line.split()[:3] == [r["id"], "stopped", "early"] and f"{r['step']}/400" in line
                   for line in out.splitlines()), out
    assert f"{failed[0]['id']} failed: RunFailed" in out
    # Each failed trial's line says why as it fails, and Tune prints no traceback of its own for it.
    printed = stopped_and_resumed["first_out"] + out + stopped_and_resumed["second"].stderr
    for r in failed:
        assert f"trial {r['id']} failed: RunFailed: 2 steps in a row had a non-finite loss" in printed, printed
    assert "Traceback" not in printed, printed
    assert (stopped_and_resumed["sweep_dir"] / "plots" / "sweep.png").stat().st_size > 10_000


def test_best_yaml_trained_again_reaches_the_sweeps_value(stopped_and_resumed, tmp_path):
    sweep_dir, rows = stopped_and_resumed["sweep_dir"], stopped_and_resumed["rows"]
    best = min((r for r in rows.values() if r["status"] == "done"), key=lambda r: (-r["value"], r["id"]))
    assert f"best: trial {best['id']}" in stopped_and_resumed["second"].stdout
    run_dir = tmp_path / "again"
    done = subprocess.run([sys.executable, "-m", "snndist", "train", "--config", str(sweep_dir / "best.yaml"),
                           "--run-dir", str(run_dir)], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval/accuracy"] == best["value"] and summary["eval/loss"] == best["metrics"]["eval/loss"]
    assert load_config(run_dir / "config.yaml").train.lr == best["params"]["train.lr"]


def test_every_trials_wandb_run_has_the_sweeps_group_and_its_hyperparameters(stopped_and_resumed):
    sweep_dir, rows = stopped_and_resumed["sweep_dir"], stopped_and_resumed["rows"]
    for trial, row in rows.items():
        newest = max((sweep_dir / "trials" / trial / "wandb").glob("offline-run-*/run-*.wandb"),
                     key=lambda p: p.parent.name)
        records = inspect_records(newest)
        run = next(r["run"] for r in records if r["type"] == "run")
        config = config_of(records)
        assert run["run_group"] == "tutorial-sweep" and run["display_name"] == trial
        assert config["train"]["lr"] == row["params"]["train.lr"]
        assert config["model"]["layers"][0]["tau_mem_ms"] == row["params"]["model.layers[0].tau_mem_ms"]
        assert config["train"]["debug_nan_steps"] == row["params"]["train.debug_nan_steps"]


def test_status_prints_the_table_of_a_sweep_directory(stopped_and_resumed, capsys):
    assert main(["sweep", "--status", str(stopped_and_resumed["sweep_dir"])]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["TRIAL", "STATUS", "STEP", "eval/accuracy"]
    assert all(trial in out for trial in stopped_and_resumed["rows"])


def test_trials_of_two_workers_each_run_them_in_the_trials_own_placement_group(local_ray, tmp_path):
    """Two 2-worker trials at once on 4 CPUs: each trial's workers must go into the bundles Tune placed
    for it; a group of their own could never be placed (and would show in Ray's table)."""
    import ray

    from snndist.sweep import tuner
    from snndist.sweep.sweep_dir import start

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "metric": "train/loss", "mode": "min", "max_concurrent_trials": 2,
        "set": ["train.steps=10", "logging.log_every=5", "train.workers=2", "logging.wandb.mode=disabled",
                "cluster.resource_timeout_s=20"],
        "space": {"train.lr": {"grid": [0.001, 0.01]}}}))
    groups_before = set(ray.util.placement_group_table())
    base = load_config(REPO / "configs" / "tutorial.yaml")
    sweep = start(base, space, tmp_path / "sweep")
    tuner.run(sweep, base, tmp_path / "sweep", resume=False)
    rows = _state(tmp_path / "sweep")
    assert [r["status"] for r in rows] == ["done", "done"], rows
    groups = {k: v for k, v in ray.util.placement_group_table().items() if k not in groups_before}
    assert len(groups) == 2 and all(len(g["bundles"]) == 2 for g in groups.values()), groups


@pytest.mark.parametrize("end_at_sigterm", [False, True])
def test_a_closed_trials_process_ends_at_sigterm_without_a_traceback(local_ray, end_at_sigterm):
    import ray

    @ray.remote
    class ClosedTrial:  # defined here, so that Ray sends the class itself: workers cannot import this module
        """A trial's process whose run has closed, with an exit hook that fails as W&B's did once its
        service was gone."""

        def close(self, end_at_sigterm: bool) -> int:
            import atexit

            def exit_hook():
                raise ConnectionResetError("Connection lost")

            atexit.register(exit_hook)
            if end_at_sigterm:
                from snndist.sweep.trial import _end_at_sigterm

                _end_at_sigterm()
            return os.getpid()

    pid = ray.get(ClosedTrial.remote().close.remote(end_at_sigterm))
    os.kill(pid, signal.SIGTERM)  # as Tune ending the actor, or the sweep's ray.shutdown, sends it
    for _ in range(300):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    stderr = "".join(p.read_text() for p in logs.glob(f"worker-*-{pid}.err"))
    # Without it (the check that this test can fail), Ray's own handler's SystemExit runs the exit hook.
    assert ("Traceback" in stderr) is not end_at_sigterm, stderr


def test_the_tutorial_sweep_file_reads():
    sweep = read_sweep(REPO / "configs" / "sweep_tutorial.yaml", load_config(REPO / "configs" / "tutorial.yaml"))
    assert sweep.num_samples == 8 and sweep.scheduler.max_t == 400
    assert set(sweep.space) == {"train.lr", "model.layers[0].tau_mem_ms", "model.surrogate_params.alpha"}


@pytest.mark.parametrize("change, message", [
    ({"space": {"train.lrr": {"uniform": [0.001, 0.01]}}}, "space.train.lrr: train.lrr: unknown key"),
    ({"space": {"model.surrogate": {"uniform": [0.1, 1.0]}}},
     "space.model.surrogate: uniform draws numbers, but model.surrogate holds str values ('relu')"),
    ({"space": {"model.layers[0].tau_mem_ms": {"uniform": [-5.0, 10.0]}}},
     "space.model.layers[0].tau_mem_ms: model.layers[0].tau_mem_ms=-5.0: must be > "),
    ({"scheduler": {"kind": "hyperband"}}, "scheduler.kind='hyperband': must be one of asha"),
    ({"num_samples": 0}, "num_samples=0: must be >= 1"),
    ({"metric": "accuracy"}, "metric='accuracy': must name a metric snndist logs"),
])
def test_a_bad_sweep_file_is_one_line_naming_the_field_and_exit_2(tmp_path, capsys, change, message):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({**SWEEP, **change}))
    code = main(["sweep", "--config", str(REPO / "configs" / "tutorial.yaml"), "--space", str(space),
                 "--run-dir", str(tmp_path / "sweep")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"snndist: error: {space}: ") and message in err, err
    assert not (tmp_path / "sweep").exists()  # refused before anything was written
