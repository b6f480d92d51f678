"""WandbTracker against the real wandb package, offline, read back with W&B's own reader."""
import secrets
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from wandb_records import config_of, history, inspect_records, inspect_summary, run_files

from snndist.config import WandbConfig
from snndist.errors import ConfigError
from snndist.track.wandb_tracker import WandbTracker, resolve_settings, start_wandb

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONFIG = {"model": {"layers": [{"size": 4, "recurrent": False}]}, "train": {"steps": 50, "lr": 0.002}}


@pytest.fixture(autouse=True)
def offline_env(monkeypatch, tmp_path):
    """No key, no mode: the tracker must choose offline by itself. W&B's own
    settings and caches are kept inside the test's directory."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_DIR", "WANDB_PROJECT",
                 "WANDB_ENTITY", "WANDB_BASE_URL", "WANDB_RUN_GROUP", "WANDB_TAGS", "WANDB_NAME"):
        monkeypatch.delenv(name, raising=False)
    for name, sub in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / sub))


def _pictures():
    """Two pictures as the loop draws them: (RGB array, caption)."""
    rng = np.random.default_rng(0)
    return {"images/hidden_raster/hidden0": ((rng.random((24, 60, 3)) * 255).astype(np.uint8), "a raster"),
            "images/rate_hist/hidden0": ((rng.random((30, 50, 3)) * 255).astype(np.uint8), "a histogram")}


def _first_run(run_dir: Path, said: list[str]) -> WandbTracker:
    tracker = start_wandb(WandbConfig(tags=("test",)), run_dir, CONFIG, default_name="first", say=said.append)
    assert tracker.mode == "offline"
    for step in (10, 20, 30):
        tracker.log({"train/loss": 1.0 / step, "spikes/rate_hz/hidden0": 5.0 + step,
                     "perf/step_time_s": np.float32(0.01)}, step)
        if step == 20:
            tracker.log_images(_pictures, step)
    tracker.summary({"final/train_loss": 1.0 / 30, "wall_time_s": 1.5})
    tracker.finish()
    return tracker


def test_settings_come_from_the_config_then_the_environment_then_the_defaults():
    env = {"WANDB_API_KEY": "k", "WANDB_MODE": "offline", "WANDB_PROJECT": "p-env", "WANDB_ENTITY": "e-env",
           "WANDB_RUN_GROUP": "g-env", "WANDB_TAGS": "a, b", "WANDB_NAME": "n-env"}
    assert resolve_settings(WandbConfig(), {}, "dir") == ("offline", "snndist", None, None, (), "dir")
    assert resolve_settings(WandbConfig(), {"WANDB_API_KEY": "k"}).mode == "online"
    assert resolve_settings(WandbConfig(), env, "dir") == ("offline", "p-env", "e-env", "g-env", ("a", "b"), "n-env")
    mine = WandbConfig(mode="disabled", project="p", entity="e", group="g", tags=("t",), name="n")
    assert resolve_settings(mine, env, "dir") == ("disabled", "p", "e", "g", ("t",), "n")
    with pytest.raises(ConfigError, match="WANDB_MODE='live': must be one of online, offline, disabled"):
        resolve_settings(WandbConfig(), {"WANDB_MODE": "live"})


def test_offline_run_reads_back(tmp_path):
    said: list[str] = []
    tracker = _first_run(tmp_path, said)
    assert said == []
    assert tracker.run_file is not None and tracker.run_file.is_file()
    assert tracker.run_file.is_relative_to(tmp_path / "wandb")
    assert run_files(tmp_path, tracker.run_id) == [tracker.run_file.resolve()]

    records = inspect_records(tracker.run_file)
    run = next(r["run"] for r in records if r["type"] == "run")
    assert run["run_id"] == tracker.run_id and run["project"] == "snndist"
    assert run["display_name"] == "first" and run["tags"] == ["test"]
    config = config_of(records)
    assert config["model"] == CONFIG["model"] and config["train"] == CONFIG["train"]

    # The step metric and its use by every other metric.
    metrics = [r["metric"] for r in records if r["type"] == "metric"]
    assert {"name": "trainer/step", "options": {"defined": True}} in [
        {k: m[k] for k in ("name", "options") if k in m} for m in metrics]
    assert any(m.get("glob_name") == "*" and m.get("step_metric") == "trainer/step" for m in metrics)

    rows = history(records)
    assert [step for step, _ in rows] == [10, 20, 30]
    for step, item in rows:
        assert item["_step"] == step and item["trainer/step"] == step
        assert item["train/loss"] == pytest.approx(1.0 / step)
        assert item["spikes/rate_hz/hidden0"] == pytest.approx(5.0 + step)
        assert item["perf/step_time_s"] == pytest.approx(0.01)

    # Images: in the step-20 row only, as image files that exist and are PNGs.
    images = {k[: -len("._type")] for step, item in rows for k, v in item.items()
              if k.endswith("._type") and v == "image-file"}
    assert images == {"images/hidden_raster/hidden0", "images/rate_hist/hidden0"}
    row20 = dict(rows)[20]
    for key in images:
        assert all(f"{key}._type" not in item for step, item in rows if step != 20)
        png = tracker.run_file.parent / "files" / row20[f"{key}.path"]
        assert png.read_bytes()[:8] == PNG_SIGNATURE
        rgb, caption = _pictures()[key]
        assert (row20[f"{key}.height"], row20[f"{key}.width"]) == rgb.shape[:2]
        assert row20[f"{key}.caption"] == caption

    # The summary, through W&B's own summary view of the same file.
    info = inspect_summary(tracker.run_file)
    assert info["step"] == 30 and info["state"] == "finished"
    assert info["summary"]["final/train_loss"] == pytest.approx(1.0 / 30)
    assert info["summary"]["wall_time_s"] == 1.5


def _first_run_in_a_new_process(run_dir: Path, before: str = "") -> tuple[str, list[str]]:
    """``_first_run`` in a fresh interpreter after ``before``: the run id, and what the script printed after it."""
    script = (f"import sys; sys.path.insert(0, 'tests'); from pathlib import Path; {before}; "
              "import test_wandb_tracker as t; run = t._first_run(Path(sys.argv[1]), []); "
              "print(run.run_id, 'pandas' in sys.modules, 'wandb.apis.public' in sys.modules, *published)")
    done = subprocess.run([sys.executable, "-c", script, str(run_dir)], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    run_id, *printed = done.stdout.splitlines()[-1].split()
    return run_id, printed


def test_logging_numbers_and_pictures_imports_neither_pandas_nor_wandbs_public_api(tmp_path):
    # W&B would import pandas at the first log (0.45 s of CPU beside the training loop) to rule out DataFrames,
    # and its public API at its start (0.5 s) to look for W&B Launch inputs that nothing staged.
    run_id, printed = _first_run_in_a_new_process(tmp_path, "published = []")
    assert printed == ["False", "False"]
    rows = history(inspect_records(run_files(tmp_path, run_id)[0]))
    assert [step for step, _ in rows] == [10, 20, 30] and "images/rate_hist/hidden0._type" in dict(rows)[20]


def test_inputs_a_wandb_launch_job_staged_still_reach_its_run(tmp_path):
    stage = ("from wandb.sdk.launch.inputs import internal; published = []; publish = internal._publish_job_input; "
             "internal._publish_job_input = lambda i, run: (published.append(i.include[0]), publish(i, run)); "
             "internal.handle_run_config_input(include=['train.lr'])")
    _, printed = _first_run_in_a_new_process(tmp_path, stage)
    assert printed == ["False", "True", "train.lr"]


def test_resume_does_not_relog_steps(tmp_path):
    said: list[str] = []
    first = _first_run(tmp_path, said)

    # Resume from an older checkpoint (step 20): W&B already holds 30, the last step of metrics.jsonl.
    resumed = start_wandb(WandbConfig(), tmp_path, CONFIG, run_id=first.run_id, say=said.append, logged_through=30)
    assert resumed.run_id == first.run_id
    assert resumed.resumed_step == 30
    resumed.log({"train/loss": 999.0}, 20)  # already in W&B: dropped
    resumed.log_images(_pictures, 30)  # dropped too
    resumed.log({"train/loss": 999.0}, 30)
    for step in (40, 50):
        resumed.log({"train/loss": 1.0 / step}, step)
    resumed.log({"train/loss": 999.0}, 45)  # backwards within the session: dropped
    resumed.finish()
    assert len(said) == 2  # once for the resume, once for going backwards
    assert "already holds steps up to 30" in said[0] and "step 20" in said[0]
    assert "step 45" in said[1]

    files = run_files(tmp_path, first.run_id)
    assert len(files) == 2 and files[1] == resumed.run_file.resolve()
    assert files[0] == first.run_file.resolve()
    steps, losses = [], []
    for path in files:
        records = inspect_records(path)
        assert next(r["run"] for r in records if r["type"] == "run")["run_id"] == first.run_id
        for step, item in history(records):
            steps.append(step)
            losses.append(item["train/loss"])
            assert item["trainer/step"] == step
    assert steps == [10, 20, 30, 40, 50]
    assert 999.0 not in losses
    assert not any(k.endswith("._type") for _, item in history(inspect_records(files[1])) for k in item)


def test_api_key_is_written_nowhere(tmp_path, monkeypatch):
    marker = f"marker-{secrets.token_hex(12)}"
    monkeypatch.setenv("WANDB_API_KEY", marker)
    tracker = start_wandb(WandbConfig(mode="offline"), tmp_path, {"note": f"key={marker}", **CONFIG},
                          say=lambda line: None)
    assert tracker.mode == "offline"
    tracker.log({"train/loss": 0.5}, 1)
    tracker.log_images(_pictures, 1)
    tracker.summary({"final/train_loss": 0.5})
    tracker.finish()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert tracker.run_file.resolve() in {p.resolve() for p in files}
    leaks = [p for p in files if marker.encode() in p.read_bytes()]
    assert leaks == []
    config = config_of(inspect_records(tracker.run_file))
    assert config["note"] == "key=<redacted>"
