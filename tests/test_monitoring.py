"""Monitoring end to end: a real training run's W&B (offline) record, read back with W&B's own reader."""
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from wandb_records import config_of, history, inspect_records, run_files

CLI = [sys.executable, "-m", "snndist"]
METRICS = ["train/loss", "train/accuracy", "train/lr", "train/grad_norm", "train/param_norm",
           "spikes/rate_hz/hidden0", "spikes/silent_fraction/hidden0", "perf/step_time_s", "perf/samples_per_s",
           "perf/timesteps_per_s", "perf/grad_sync_s", "perf/data_s", "ckpt/save_block_s", "system/workers",
           "system/recoveries", "system/pending_s", "train/skipped_steps"]
IMAGES = ["images/input_raster", "images/hidden_raster/hidden0", "images/voltage/hidden0", "images/readout",
          "images/rate_hist/hidden0"]
RUN = ["train.steps=40", "logging.log_every=10", "logging.wandb.images_every=20", "checkpoint.every_steps=20",
       "train.workers=2", "train.global_batch=64", "data.num_samples=128"]


def _env(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_CONFIG_DIR=str(home / "config"), WANDB_CACHE_DIR=str(home / "cache"),
               WANDB_DATA_DIR=str(home / "data"), **extra)
    return env


def _train(*args, env):
    return subprocess.run([*CLI, "train", *args], capture_output=True, text=True, timeout=600, env=env)


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-worker Ray run of 40 steps, then resumed to 60 in-process (the same W&B run either way)."""
    tmp = tmp_path_factory.mktemp("monitoring")
    run, env = tmp / "run", _env(tmp / "wandb-home")
    first = _train("--config", "configs/tutorial.yaml", "--run-dir", str(run), *_sets(RUN), env=env)
    assert first.returncode == 0, first.stderr
    second = _train("--resume", str(run), "--local", "--set", "train.steps=60", env=env)
    assert second.returncode == 0, second.stderr
    return run, first, second


def _run_id(run: Path) -> str:
    manager_meta = sorted((run / "checkpoints").glob("*/meta/metadata"))[-1]
    return json.loads(manager_meta.read_text())["wandb_run_id"]


def test_one_wandb_run_holds_metrics_config_and_images(trained):
    run, first, _ = trained
    run_id = _run_id(run)
    assert f"W&B: run {run_id} (offline" in first.stdout
    files = run_files(run, run_id)
    assert len(files) == 2, "one W&B run (two sessions: the resume), not one per worker"
    assert len(list((run / "wandb").glob("offline-run-*"))) == 2

    records = inspect_records(files[0])
    config = config_of(records)
    assert config["train"]["steps"] == 40 and config["train"]["workers"] == 2
    assert any(m.get("glob_name") == "*" and m.get("step_metric") == "trainer/step"
               for m in (r["metric"] for r in records if r["type"] == "metric"))

    rows = dict(history(records))
    assert sorted(rows) == [10, 20, 30, 40]
    for step in (10, 20, 30, 40):
        missing = [m for m in METRICS if m not in rows[step]]
        assert not missing, f"step {step} lacks {missing}"
        assert rows[step]["trainer/step"] == step and rows[step]["system/workers"] == 2
    assert "eval/loss" in rows[40] and "eval/accuracy" in rows[40]
    for step in (20, 40):
        assert all(rows[step].get(f"{name}._type") == "image-file" for name in IMAGES), rows[step].keys()
    assert not any(k.endswith("._type") for k in rows[10])


def test_resume_continues_the_same_run_with_increasing_steps(trained):
    run, _, second = trained
    run_id = _run_id(run)
    assert "resumed at step 40" in second.stdout and f"W&B: run {run_id}" in second.stdout
    steps = [step for f in run_files(run, run_id) for step, _ in history(inspect_records(f))]
    assert steps == [10, 20, 30, 40, 50, 60]


def test_eval_and_plot_on_the_trained_run(trained):
    run, _, _ = trained
    for split in ("train", "test"):
        result = subprocess.run([*CLI, "eval", str(run), "--split", split], capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr
        written = json.loads((run / f"eval_{split}.json").read_text())
        assert written["step"] == 60 and 0 <= written["eval/accuracy"] <= 1 and np.isfinite(written["eval/loss"])
        assert "eval/loss" in result.stdout
    result = subprocess.run([*CLI, "plot", str(run)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for name in ("loss", "raster", "voltage"):
        path = run / "plots" / f"{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = matplotlib.image.imread(path)
        assert pixels.shape[0] >= 300 and pixels.shape[1] >= 600 and pixels[..., :3].std() > 0.01, name


def test_api_key_is_written_nowhere(tmp_path):
    marker = f"marker-{secrets.token_hex(8)}"
    run = tmp_path / "run"
    result = _train("--config", "configs/tutorial.yaml", "--local", "--run-dir", str(run),
                    *_sets(["train.steps=20", "logging.log_every=10", "logging.wandb.mode=offline",
                            "logging.wandb.images_every=10"]),
                    env=_env(tmp_path / "wandb-home", WANDB_API_KEY=marker))
    assert result.returncode == 0, result.stderr
    assert marker not in result.stdout + result.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 10
    leaked = [str(p) for p in files if marker.encode() in p.read_bytes()]
    assert not leaked, leaked


def test_progress_bar_on_a_terminal_and_lines_elsewhere(tmp_path):
    args = ["train", "--config", "configs/tutorial.yaml", "--local", *_sets(
        ["train.steps=100", "logging.log_every=50", "logging.wandb.mode=disabled"])]
    # util-linux `script` gives the command a pseudo-terminal.
    command = " ".join([sys.executable, "-m", "snndist", *args, "--run-dir", str(tmp_path / "tty")])
    on_tty = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, text=True, timeout=300)
    assert on_tty.returncode == 0, on_tty.stdout
    assert "━" in on_tty.stdout and "100/100" in on_tty.stdout and "samples/s" in on_tty.stdout
    assert "step 50/100" not in on_tty.stdout, "a terminal gets the bar, not the plain lines"
    plain = _train(*args[1:], "--run-dir", str(tmp_path / "plain"), env=_env(tmp_path / "home"))
    assert plain.returncode == 0, plain.stderr
    assert "step 50/100  loss" in plain.stdout and "━" not in plain.stdout
    # logging.wandb.mode=disabled: no W&B run at all, and metrics.jsonl still has every logged step.
    assert "W&B" not in plain.stdout and not (tmp_path / "plain" / "wandb").exists()
    rows = [json.loads(line) for line in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [50, 100]
