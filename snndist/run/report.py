"""``snndist eval`` and ``snndist plot``: look at a run from its directory alone."""
from __future__ import annotations

import json
from pathlib import Path

from etils import epath

from snndist.config import load_config
from snndist.errors import ConfigError
from snndist.run.loop import restore_newest
from snndist.store.checkpoint import Checkpointer
from snndist.store.rundir import open_run_dir
from snndist.track.metrics import summarize


def _trained(run_dir: epath.Path):
    """The run's config and a local runner holding its newest checkpoint."""
    from snndist.train.local import LocalRunner

    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.yaml)")
    cfg = load_config(run_dir / "config.yaml")
    runner = LocalRunner(cfg, devices=1)
    checkpointer = Checkpointer(run_dir, cfg.checkpoint, say=print)
    try:
        meta = restore_newest(checkpointer, runner)
    finally:
        checkpointer.close()
    if meta is None:
        raise ConfigError(f"{run_dir}: no checkpoint to load")
    return cfg, runner, meta["step"]


def evaluate_run(run_dir: str | Path, split: str) -> dict[str, float]:
    """Eval loss, accuracy and per-layer rates of the newest checkpoint; also written to eval_<split>.json."""
    run_dir = open_run_dir(run_dir)
    cfg, runner, step = _trained(run_dir)
    metrics = {"step": step, "split": split, **summarize(runner.evaluate(split), prefix="eval")}
    (run_dir / f"eval_{split}.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def plot_run(run_dir: str | Path) -> list[epath.Path]:
    """``plots/loss.png`` from metrics.jsonl; ``plots/raster.png`` and ``plots/voltage.png`` from the
    newest checkpoint on sample 0 of the training set."""
    from snndist.track import figures

    run_dir = open_run_dir(run_dir)
    metrics_file = run_dir / "metrics.jsonl"
    if not metrics_file.is_file():
        raise ConfigError(f"{run_dir}: no metrics.jsonl to plot")
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    cfg, runner, _ = _trained(run_dir)
    seen = runner.trace([0])
    trace, dt = seen["trace"], cfg.data.dt_ms
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    return [figures.save_png(figures.loss_curve(rows), out / "loss.png"),
            figures.save_png(figures.spike_raster(trace.spikes[-1][:, 0], title="hidden spikes, sample 0", dt_ms=dt),
                             out / "raster.png"),
            figures.save_png(figures.voltage_traces(trace.voltages[0][:, 0, :6], trace.spikes[0][:, 0, :6],
                                                    cfg.model.layers[0].threshold, dt), out / "voltage.png")]


