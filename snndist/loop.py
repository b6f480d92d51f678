"""The training loop: which samples each step reads, when to log and evaluate.

It drives any runner with ``num_samples``, ``step(indices) -> metrics`` and
``evaluate(split) -> metrics``: the single-process one or the Ray coordinator.
"""
from __future__ import annotations

import time
from typing import Callable

from snndist.config import Config
from snndist.data.order import batch_indices
from snndist.metrics import summarize
from snndist.tracking import Tracker


def fit(cfg: Config, runner, tracker: Tracker, *, start_step: int = 0,
        say: Callable[[str], None] = print) -> dict[str, float]:
    """Train from ``start_step`` to ``train.steps``; returns the summary."""
    t = cfg.train
    began = window_start = time.perf_counter()
    window_steps = 0
    last: dict[str, float] = {}
    for step in range(start_step, t.steps):
        indices = batch_indices(step, t.global_batch, runner.num_samples, t.seed, cfg.data.shuffle)
        metrics = runner.step(indices)
        window_steps += 1
        done = step + 1
        if done % cfg.logging.log_every == 0 or done == t.steps:
            last = summarize(metrics)  # reading the metrics waits for the step
            elapsed = time.perf_counter() - window_start
            last.update(_perf(elapsed / window_steps, t.global_batch, cfg.data.timesteps))
            tracker.log(last, done)
            say(_progress_line(done, t.steps, last, time.perf_counter() - began, start_step))
            window_start, window_steps = time.perf_counter(), 0
        if t.eval_every and done % t.eval_every == 0 and done < t.steps:
            tracker.log(summarize(runner.evaluate(t.eval_split), prefix="eval"), done)
            window_start = time.perf_counter()  # keep eval time out of perf/step_time_s
    evaluation = summarize(runner.evaluate(t.eval_split), prefix="eval")
    tracker.log(evaluation, t.steps)
    summary = {"step": t.steps, **{k: v for k, v in last.items() if k.startswith("train/")},
               **evaluation, "wall_time_s": time.perf_counter() - began}
    tracker.summary(summary)
    say(f"done: step {t.steps}  train/loss {summary.get('train/loss', float('nan')):.4f}  "
        f"eval/loss {summary['eval/loss']:.4f}  eval/accuracy {summary['eval/accuracy']:.3f}  "
        f"in {summary['wall_time_s']:.1f} s")
    return summary


def _perf(step_time_s: float, global_batch: int, timesteps: int) -> dict[str, float]:
    return {"perf/step_time_s": step_time_s,
            "perf/samples_per_s": global_batch / step_time_s,
            "perf/timesteps_per_s": global_batch * timesteps / step_time_s}


def _progress_line(done: int, total: int, m: dict[str, float], elapsed: float, start: int) -> str:
    eta = elapsed / max(done - start, 1) * (total - done)
    return (f"step {done}/{total}  loss {m['train/loss']:.4f}  acc {m['train/accuracy']:.3f}  "
            f"{m['perf/samples_per_s']:.0f} samples/s  eta {eta:.0f} s")
