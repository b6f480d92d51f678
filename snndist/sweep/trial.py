"""One trial of a sweep: an ordinary snndist run in its own run directory, reporting to Ray Tune.

The trial's config is the sweep's base config with the trial's point of the space, its W&B group the
sweep's name (``sweep_dir.trial_config``). A trial started again (the sweep resumed, or Tune
restarting it) continues its run directory from its newest checkpoint.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

# Imported where Ray unpickles the trial function, on the trial process's main thread: the trial itself
# runs on a thread of Tune's, and importing W&B off the main thread can race CPython 3.11's AST
# constructor (gh-106905).
import wandb  # noqa: F401
from ray import tune
from ray.tune.trainable.function_trainable import wrap_function

from snndist.sweep.sweep_dir import trial_config, trial_dir

CLOSE_TIMEOUT_S = 120  # how long the sweep waits for ended trials to close their runs before leaving Ray


class TuneReport:
    """A tracker that reports to Ray Tune whenever ``metric`` is logged, with the latest value of every
    other metric and the step; Tune's scheduler may end the trial there (the report raises SystemExit, and
    the run closes as on any stop). The last step is reported by ``run_trial`` once the run has closed:
    a trial that reaches the scheduler's ``max_t`` is ended at its report too."""

    takes_images = False

    def __init__(self, metric: str, last_step: int):
        self.metric, self.last_step = metric, last_step
        self.latest: dict[str, float] = {}

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.latest.update(metrics)
        if self.metric in metrics and step < self.last_step:
            tune.report({**self.latest, "step": step})

    def log_images(self, images, step: int) -> None:
        pass

    def summary(self, metrics: dict[str, float]) -> None:
        pass

    def finish(self) -> None:
        pass

    def final(self, summary: dict[str, float]) -> None:
        tune.report({**self.latest, **summary, "step": int(summary["step"])})


_CLOSED = threading.Event()  # in a trial's process (one trial a process): its run has closed


def _closed() -> threading.Event:
    return _CLOSED  # looked up in the trial's process: a function here is pickled by name, an Event cannot be


def trainable(sweep_dir: str, sets: tuple[str, ...], group: str, metric: str) -> type:
    """The Tune trainable of the sweep's trials: each runs ``run_trial`` with its point of the space."""

    def run_trial(params: dict) -> None:
        try:
            # This process coordinates; the workers choose their platform in their own environment.
            os.environ["JAX_PLATFORMS"] = "cpu"
            from snndist.run.launch import train

            trial_id = tune.get_context().get_trial_id()
            run_dir = trial_dir(sweep_dir, trial_id)
            cfg = trial_config(sweep_dir, sets, params, group, trial_id)
            report = TuneReport(metric, cfg.train.steps)
            summary = train(cfg, run_dir, local=False, resume=run_dir.exists(), report=report,
                            say=lambda line: print(f"[{trial_id}] {line}", flush=True))
            report.final(summary)
        finally:
            _closed().set()

    class Trial(wrap_function(run_trial)):
        def cleanup(self):
            """Tune's own cleanup tells the trial's thread to stop (at its report) and returns at once; the
            process then goes. First let the run close whole: W&B, checkpoints, workers."""
            try:
                super().cleanup()
            finally:
                if _closed().wait(CLOSE_TIMEOUT_S):
                    _end_at_sigterm()

    return Trial


def _end_at_sigterm() -> None:
    """A SIGTERM now ends the process at once: its run has closed, and nothing is left to save. Ray's own
    handler raises SystemExit wherever the process happens to be, a finalizer or W&B's exit hook among
    them, whose tracebacks then came out beside the sweep's lines (Tune ending a trial's actor, the sweep
    leaving Ray). Called on the actor's main thread, the only one that may set a handler."""
    def end(signum, frame):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, end)
