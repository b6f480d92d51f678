"""What logging costs the training loop at the tutorial config with default log_every.

    python scripts/bench_logging.py                 # 3000 steps x 9 rounds each way
    python scripts/bench_logging.py --steps 3000 --rounds 3

"logged" is a real run's tracking: metrics.jsonl and a W&B offline run, every
``logging.log_every`` steps, images every ``logging.wandb.images_every``.
"bare" logs once, at the end, to nothing. Both run the same steps and the same
checkpoints, alternating, single-process on one device, each run in a fresh
Python process (W&B keeps one service process per Python process; runs made
one after another in one process would share it and its backlog). The time
is the training loop's, first step to last (what logging adds between
steps), not start-up or the final flush of the W&B files.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from pathlib import Path

import numpy as np

from snndist.config import load_config
from snndist.run.loop import fit
from snndist.store.checkpoint import Checkpointer
from snndist.track.tracker import BackgroundTracker, JsonlTracker, MultiTracker, NullTracker
from snndist.track.wandb_tracker import start_wandb
from snndist.train.local import LocalRunner


class _Clocked:
    """A runner whose steps are timed: from the first step's start to the last step's return."""

    def __init__(self, runner):
        self.runner, self.first, self.last = runner, None, None

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def steps(self, batches, upcoming=None, expected_s=0.0):
        self.first = self.first or time.perf_counter()
        metrics = self.runner.steps(batches, upcoming, expected_s)
        self.last = time.perf_counter()
        return metrics


def one_run(logged: bool, steps: int, tmp: Path, images_every: int) -> float:
    overrides = [f"train.steps={steps}", "logging.wandb.mode=offline", f"logging.wandb.images_every={images_every}"]
    if not logged:
        overrides.append(f"logging.log_every={steps}")
    cfg = load_config("configs/tutorial.yaml", overrides)
    run = tmp / f"{'logged' if logged else 'bare'}-{time.monotonic_ns()}"
    run.mkdir()
    runner = LocalRunner(cfg, devices=1)
    runner.step(np.arange(cfg.train.global_batch))  # compile outside the timing
    tracker = (BackgroundTracker(MultiTracker(JsonlTracker(run), start_wandb(
        cfg.logging.wandb, run, cfg.to_dict(), say=lambda _: None, system_stats=cfg.logging.wandb.system_stats)))
               if logged else NullTracker())
    checkpointer = Checkpointer(run, cfg.checkpoint, say=lambda _: None)
    clocked = _Clocked(runner)
    fit(cfg, clocked, tracker, checkpointer, say=lambda _: None)
    tracker.finish()
    checkpointer.close()
    return (clocked.last - clocked.first) / (steps - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--images-every", type=int, default=load_config("configs/tutorial.yaml").logging.wandb.images_every)
    parser.add_argument("--one", choices=["bare", "logged"], help=argparse.SUPPRESS)  # a single run, in this process
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.pop("WANDB_API_KEY", None)
    if args.one:
        print(one_run(args.one == "logged", args.steps, Path(args.tmp), args.images_every))
        return
    times = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for logged in (False, True):
                out = subprocess.run([sys.executable, __file__, "--one", "logged" if logged else "bare", "--tmp", tmp,
                                      "--steps", str(args.steps), "--images-every", str(args.images_every)],
                                     check=True, capture_output=True, text=True).stdout
                times[logged].append(float(out.split()[-1]))
            print(f"round {r + 1}: bare {1000 * times[False][-1]:.3f} ms/step, logged "
                  f"{1000 * times[True][-1]:.3f} ms/step ({times[True][-1] / times[False][-1] - 1:+.1%})", flush=True)
    # Runs in fresh processes scatter by +-15% on a small machine (how XLA's threads
    # land on the cores), logged or not: the cost is judged on each round's pair.
    paired = statistics.median(l / b - 1 for b, l in zip(times[False], times[True]))
    bare, logged = statistics.median(times[False]), statistics.median(times[True])
    print(f"tutorial config, {args.steps} steps x {args.rounds} rounds, log_every 100, "
          f"images_every {args.images_every}")
    print(f"{'bare ms/step':>13} {'logged ms/step':>15} {'cost (median of pairs)':>23} {'cost (fastest runs)':>20}")
    print(f"{1000 * bare:13.3f} {1000 * logged:15.3f} {paired:23.1%} "
          f"{min(times[True]) / min(times[False]) - 1:20.1%}")


if __name__ == "__main__":
    main()
