"""What logging costs the training loop at the tutorial config with default log_every.

    python scripts/bench_logging.py                 # 3000 steps x 3 rounds each way
    python scripts/bench_logging.py --steps 3000 --rounds 2

"logged" is a real run's tracking: metrics.jsonl and a W&B offline run, every
``logging.log_every`` steps, images every ``logging.wandb.images_every``.
"bare" logs once, at the end, to nothing. Both run the same steps and the same
checkpoints in one process, alternating, single-process on one device. The
time is the training loop's, first step to last (what logging adds between
steps), not start-up or the final flush of the W&B files.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
from pathlib import Path

from snndist.checkpoint import Checkpointer
from snndist.config import load_config
from snndist.local import LocalRunner
from snndist.loop import fit
from snndist.tracking import BackgroundTracker, JsonlTracker, MultiTracker
from snndist.wandb_tracker import WandbTracker


class _Clocked:
    """A runner whose steps are timed: from the first step's start to the last step's return."""

    def __init__(self, runner):
        self.runner, self.first, self.last = runner, None, None

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def step(self, indices):
        self.first = self.first or time.perf_counter()
        metrics = self.runner.step(indices)
        self.last = time.perf_counter()
        return metrics


class _Nowhere:
    def log(self, metrics, step): pass
    def summary(self, metrics): pass
    def finish(self): pass


def one_run(logged: bool, steps: int, tmp: Path, images_every: int) -> float:
    overrides = [f"train.steps={steps}", "logging.wandb.mode=offline", f"logging.wandb.images_every={images_every}"]
    if not logged:
        overrides.append(f"logging.log_every={steps}")
    cfg = load_config("configs/tutorial.yaml", overrides)
    run = tmp / f"{'logged' if logged else 'bare'}-{time.monotonic_ns()}"
    run.mkdir()
    runner = LocalRunner(cfg, devices=1)
    runner.step(np.arange(cfg.train.global_batch))  # compile outside the timing
    tracker = (BackgroundTracker(MultiTracker(JsonlTracker(run), WandbTracker(
        run, cfg.logging.wandb, cfg.to_dict(), say=lambda _: None, system_stats=cfg.logging.wandb.system_stats))) if logged else _Nowhere())
    checkpointer = Checkpointer(run, cfg.checkpoint, say=lambda _: None)
    clocked = _Clocked(runner)
    fit(cfg, clocked, tracker, checkpointer, say=lambda _: None)
    tracker.finish()
    checkpointer.close()
    return (clocked.last - clocked.first) / (steps - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images-every", type=int, default=load_config("configs/tutorial.yaml").logging.wandb.images_every)
    args = parser.parse_args()
    os.environ.pop("WANDB_API_KEY", None)
    times = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for logged in (False, True):
                times[logged].append(one_run(logged, args.steps, Path(tmp), args.images_every))
    bare, logged = statistics.median(times[False]), statistics.median(times[True])
    print(f"tutorial config, {args.steps} steps x {args.rounds} rounds, log_every 100, "
          f"images_every {args.images_every}")
    print(f"{'bare ms/step':>13} {'logged ms/step':>15} {'logging cost':>13}")
    print(f"{1000 * bare:13.3f} {1000 * logged:15.3f} {(logged - bare) / bare:12.1%}")


if __name__ == "__main__":
    main()
