"""Running a sweep with Ray Tune, or resuming one: the search space, the early-stopping scheduler, each
trial's resources, and the trials' state as they start and end."""
from __future__ import annotations

import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Callable

import ray
from ray import tune
from ray.tune import ExperimentAnalysis
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from snndist.config import Config
from snndist.dist import cluster
from snndist.store.lease import is_held
from snndist.sweep.results import TrialRow, write_state
from snndist.sweep.space import Sweep
from snndist.sweep.sweep_dir import sweep_name, trial_config, trial_dir
from snndist.sweep.trial import CLOSE_TIMEOUT_S, trainable


def run(sweep: Sweep, base: Config, sweep_dir: Path, *, resume: bool, say: Callable[[str], None] = print):
    """Run (or continue) the sweep on the connected Ray cluster until every trial has ended or the sweep is
    stopped (SIGINT, SIGTERM); the trials' state is then in ``trials.json``."""
    sweep_dir = sweep_dir.absolute()
    group = sweep_name(sweep, sweep_dir)
    runnable = _with_resources(trainable(str(sweep_dir), sweep.sets, group, sweep.metric), sweep_dir, sweep.sets,
                               group)
    # SIGTERM stops the sweep as Ctrl+C does: Tune saves where it is, and --resume continues.
    before = signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    progress = Progress(sweep, sweep_dir)
    # Its complaint about trials that never reported (not started yet): the table says so.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # Tune's own output (boxes, a TensorBoard hint, each failed trial's whole traceback) beside the lines
    # `Progress` prints: what a failed trial died of is in its line, its run directory and the final table.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's older output, which verbose=0 silences
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    if resume:
        say(f"resuming the sweep in {sweep_dir}")
        tuner = tune.Tuner.restore(str(sweep_dir), runnable, resume_unfinished=True, resume_errored=False,
                                   restart_errored=False)
    else:
        tuner = tune.Tuner(
            runnable, param_space=search_space(sweep),
            tune_config=tune.TuneConfig(
                metric=sweep.metric, mode=sweep.mode, num_samples=sweep.num_samples,
                max_concurrent_trials=sweep.max_concurrent_trials or None, scheduler=_scheduler(sweep),
                search_alg=BasicVariantGenerator(random_state=sweep.seed)),
            run_config=tune.RunConfig(name=sweep_dir.name, storage_path=str(sweep_dir.parent),
                                      failure_config=tune.FailureConfig(max_failures=0), verbose=0,
                                      callbacks=[progress]))
    try:
        tuner.fit()
    finally:
        signal.signal(signal.SIGTERM, before)
    rows = progress.write_saved()
    _wait_until_closed([r for r in rows if r.status not in ("pending", "running")], base.checkpoint.lease_timeout_s,
                       say)


def _wait_until_closed(ended: list[TrialRow], lease_timeout_s: float, say) -> None:
    """Tune counts a trial ended once it has asked it to stop; the trial may still be closing its run (W&B,
    checkpoints, workers), which leaving Ray would cut short."""
    began, said = time.monotonic(), False
    while time.monotonic() - began < CLOSE_TIMEOUT_S:
        closing = [r for r in ended if is_held(r.run_dir, lease_timeout_s)]
        if not closing:
            return
        if not said and time.monotonic() - began > 5:
            say(f"waiting for {len(closing)} trial(s) to close their runs")
            said = True
        time.sleep(0.2)


class Progress(tune.Callback):
    """One line per trial event, and the trials' state in ``trials.json`` after each, for ``--status``."""

    def __init__(self, sweep: Sweep, sweep_dir: Path):
        self.sweep, self.sweep_dir = sweep, sweep_dir
        grids = [len(args) for kind, args in sweep.space.values() if kind == "grid"]
        self.samples = sweep.num_samples * math.prod(grids)  # Tune repeats the whole grid num_samples times
        self.steps: dict[str, int] = {}  # each trial's train.steps, read once

    def on_trial_start(self, iteration, trials, trial, **info):
        print(f"trial {trial.trial_id} started: {_params(trial.config)}", flush=True)
        self._write(trials)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._write(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        row = self._write(trials, ended=(trial, "TERMINATED"))[trial.trial_id]  # Tune sets it after the callbacks
        print(f"trial {trial.trial_id} {row.status} at step {row.step}: {self.sweep.metric} {row.value:.6g}",
              flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        row = self._write(trials, ended=(trial, "ERROR"))[trial.trial_id]
        at = f" after step {row.step}" if row.step is not None else ""
        print(f"trial {trial.trial_id} failed{at}: {row.error}; the sweep goes on", flush=True)

    def write_saved(self) -> list[TrialRow]:
        """The trials as Tune saved them last, what a resume starts from (at the end of an interrupted sweep
        Tune ends the unfinished trials in memory, not in its saved state)."""
        rows = [self._row(t, t.status) for t in ExperimentAnalysis(str(self.sweep_dir)).trials]
        write_state(self.sweep_dir, rows, self.samples)
        return rows

    def _write(self, trials, ended: tuple = (None, None)) -> dict[str, TrialRow]:
        rows = {t.trial_id: self._row(t, ended[1] if t is ended[0] else t.status) for t in trials}
        write_state(self.sweep_dir, list(rows.values()), self.samples)
        return rows

    def _row(self, trial, tune_status: str) -> TrialRow:
        result = trial.last_result or {}
        if trial.trial_id not in self.steps:
            cfg = trial_config(self.sweep_dir, self.sweep.sets, trial.config, "", trial.trial_id)
            self.steps[trial.trial_id] = cfg.train.steps
        steps, step = self.steps[trial.trial_id], result.get("step")
        status = {"TERMINATED": "done", "ERROR": "error", "RUNNING": "running"}.get(tune_status, "pending")
        if status == "done" and (step is None or step < steps):
            status = "stopped early"
        return TrialRow(trial.trial_id, status, dict(trial.config), step, steps,
                        result.get(self.sweep.metric), _reason(_error_text(trial)) if status == "error" else None,
                        str(trial_dir(self.sweep_dir, trial.trial_id)),
                        {k: v for k, v in result.items() if k.startswith(("train/", "eval/"))})


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _error_text(trial) -> str | None:
    """The trial's error as Tune wrote it: on this machine first (at once), else in the sweep directory (where
    Tune copies it later, and where a resumed sweep finds it)."""
    if trial.error_file and os.path.exists(trial.error_file):
        return Path(trial.error_file).read_text()
    return trial.get_error()


def _reason(error: str | None) -> str:
    """The last line of a trial's traceback, the exception's own line, without its module path."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    name, sep, message = lines[-1].partition(": ")
    return f"{name.rsplit('.', 1)[-1]}: {message}" if sep else lines[-1]


def search_space(sweep: Sweep) -> dict:
    make = {"grid": tune.grid_search, "choice": tune.choice, "uniform": lambda a: tune.uniform(*a),
            "loguniform": lambda a: tune.loguniform(*a), "randint": lambda a: tune.randint(*a)}
    return {key: make[kind](args) for key, (kind, args) in sweep.space.items()}


def _scheduler(sweep: Sweep):
    s = sweep.scheduler
    if s is None:
        return None
    return ASHAScheduler(time_attr="step", grace_period=s.grace_period, max_t=s.max_t,
                         reduction_factor=s.reduction_factor)


def _with_resources(run_trial, sweep_dir: Path, sets: tuple[str, ...], group: str):
    """Each trial: no resources of its own (it coordinates), and a bundle per worker, in one placement group,
    so that trials of several workers pack onto the cluster as whole groups."""
    have = ray.cluster_resources()

    def resources(params: dict):
        cfg = trial_config(sweep_dir, sets, params, group, "resources")
        accelerator, bundle = cluster.worker_bundle(cfg.cluster, have)
        return tune.PlacementGroupFactory([{}] + [bundle] * cfg.train.workers,
                                          strategy=cluster.placement_strategy(cfg.cluster, accelerator))

    return tune.with_resources(run_trial, resources)
