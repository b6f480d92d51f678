"""The training loop: which samples each step reads, when to log, evaluate,
checkpoint, recover and stop.

It drives a ``Runner`` (``snndist.train.runner``): the single-process
``LocalRunner`` or the Ray ``RayRunner``; it restores checkpoints into it.
"""
from __future__ import annotations

import signal
import threading
import time
from typing import TYPE_CHECKING, Callable

import numpy as np

from snndist.config import Config, config_hash
from snndist.data.order import batch_indices, data_position
from snndist.errors import ClusterError, Preempted, RunFailed, WorkerLost
from snndist.store.lease import RunLease
from snndist.track.metrics import summarize
from snndist.track.pixels import network_pixels
from snndist.track.progress import Progress
from snndist.track.tracker import Pictures, Tracker
from snndist.train.runner import Runner

if TYPE_CHECKING:  # Orbax loads JAX: a Ray run's driver imports it while its workers start
    from snndist.store.checkpoint import Checkpointer

# Seconds of training per runner call (train.steps_per_call: 0): the steps between two checks of the stop
# signal, the drain notice and the lease, run without a host round trip between them.
CHUNK_S = 1.0


class StopSignal:
    """Turns SIGTERM and SIGINT into a flag the loop reads between steps."""

    def __init__(self):
        self.signal: int | None = None

    def install(self) -> "StopSignal":
        """Catch the signals here if this is the main thread; elsewhere (a Ray Tune trial's thread) the
        process's owner stops the run."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    def reason(self, runner: Runner) -> str | None:
        """Why the run must stop now: a signal, or a drain notice for one of the runner's nodes."""
        if self.signal is not None:
            return f"signal {signal.Signals(self.signal).name}"
        return runner.preemption_notice()


def restore_newest(checkpointer: Checkpointer, runner: Runner) -> dict | None:
    """Load the newest readable checkpoint into ``runner`` (any topology); its meta, or None if there is none."""
    restored = checkpointer.restore_latest(runner.get_state())
    if restored is None:
        return None
    state, meta = restored
    runner.set_state({**state, "step": meta["step"], "skipped": meta["skipped"]})
    return meta


def fit(cfg: Config, runner: Runner, tracker: Tracker, checkpointer: Checkpointer, *, start_step: int = 0,
        stop: StopSignal | None = None, meta: dict | None = None,
        say: Callable[[str], None] = print, lease: RunLease | None = None) -> dict[str, float]:
    """Train from ``start_step`` to ``train.steps``; returns the summary. With ``lease``, every step
    first checks that the run directory is still this run's."""
    t = cfg.train
    stop = stop or StopSignal()
    progress = Progress(t.steps, start_step, say)
    say = progress.note
    images_every = cfg.logging.wandb.images_every if tracker.takes_images else 0
    if images_every:  # compile the pictures' forward pass now (0.2 s at the tutorial config), not mid-run
        runner.trace(PICTURED_SAMPLES[:runner.num_samples])
    began = window_start = time.perf_counter()
    window_steps, bad_streak, failures, save_block = 0, 0, [], []
    last: dict[str, float] = {}
    previous = None  # the last step's metrics, read one step late so the device stays busy
    evaluation = None
    step = pictured = start_step
    pace, compiling = None, True  # seconds per step of the last call; whether the next one compiles the step

    def save(at: int, metrics: dict | None = None) -> None:
        state = runner.get_state()
        info = {**(meta or {}), "step": at, "skipped": state["skipped"], "config_hash": config_hash(cfg),
                "data_position": data_position(at, t.global_batch, runner.num_samples),
                "topology": runner.topology(), "seeds": {"train": t.seed, "data": cfg.data.seed}}
        save_block.append(checkpointer.save(at, state, info, metrics))

    try:
        while step < t.steps:
            if lease is not None:
                lease.check()
            checkpointer.check()
            reason = stop.reason(runner)
            if reason:
                save(step)
                checkpointer.wait()
                raise Preempted(f"stopped by {reason} at step {step}; checkpoint committed; "
                                f"continue with --resume")
            # One step while the pace is unknown (the first call compiles): a call's timeout counts on it.
            count = min(_to_boundary(cfg, step),
                        1 if pace is None else t.steps_per_call or max(1, int(CHUNK_S / pace)))
            batch_at = lambda s: batch_indices(s, t.global_batch, runner.num_samples, t.seed, cfg.data.shuffle)
            batches = [batch_at(s) for s in range(step, step + count)]
            upcoming = batch_at(step + count) if step + count < t.steps else None
            chunk_start = time.perf_counter()
            try:
                results = runner.steps(batches, upcoming, expected_s=count * (pace or 0.0))
            except WorkerLost as err:
                step = _recover(cfg, runner, checkpointer, err, step, failures, tracker, say)
                previous, pace, compiling = None, None, True  # new workers compile again
                continue
            if lease is not None:  # before anything of this call is written
                lease.check()
            for metrics in results:
                if previous is not None:
                    bad_streak = bad_streak + 1 if bool(np.asarray(previous["train/step_skipped"])) else 0
                    if bad_streak >= t.max_bad_steps:
                        checkpointer.wait()
                        raise RunFailed(f"{bad_streak} steps in a row had a non-finite loss or gradient "
                                        f"(train.max_bad_steps={t.max_bad_steps}); stopped at step {step}")
                previous = metrics
                step += 1
                window_steps += 1
            pace = None if compiling else (time.perf_counter() - chunk_start) / count
            compiling = False
            if step % cfg.logging.log_every == 0 or step == t.steps:
                last = summarize(metrics)  # reading the metrics waits for the step
                elapsed = time.perf_counter() - window_start
                last.update(_perf(elapsed / window_steps, t.global_batch, cfg.data.timesteps))
                last.update({"system/recoveries": float(len(failures)), "system/pending_s": runner.pending_s,
                             "system/workers": float(max(runner.topology()["workers"], 1)),  # fewer after a loss
                             "ckpt/save_block_s": save_block[-1] if save_block else 0.0})
                tracker.log(last, step)
                eta = (time.perf_counter() - began) / max(step - start_step, 1) * (t.steps - step)
                progress.update(step, last, eta)
                # Pictures only at logged steps, so that metrics.jsonl records every step W&B holds (a
                # resume reads it): at the first one at or after each multiple of images_every.
                if images_every and (step // images_every > pictured // images_every or step == t.steps):
                    tracker.log_images(_pictures(cfg, runner), step)
                    pictured = step
                window_start, window_steps = time.perf_counter(), 0
            evaluation = None
            if (t.eval_every and step % t.eval_every == 0) or step == t.steps:
                evaluation = summarize(runner.evaluate(t.eval_split), prefix="eval")
            if step % cfg.checkpoint.every_steps == 0 or step == t.steps:
                save(step, evaluation)
                grown = runner.grow() if step < t.steps else None
                if grown:
                    say(grown)
            if evaluation is not None:  # after the save: a sweep's scheduler may end the trial at this report
                tracker.log(evaluation, step)
                window_start = time.perf_counter()  # keep eval time out of perf/step_time_s
    finally:  # also on a stop signal or a failure
        progress.close()
    checkpointer.wait()
    if evaluation is None:  # resumed a finished run
        evaluation = summarize(runner.evaluate(t.eval_split), prefix="eval")
    summary = {"step": t.steps, **{k: v for k, v in last.items() if k.startswith("train/")}, **evaluation,
               "wall_time_s": time.perf_counter() - began, "system/recoveries": float(len(failures))}
    tracker.summary(summary)
    say(f"done: step {t.steps}  train/loss {summary.get('train/loss', float('nan')):.4f}  "
        f"eval/loss {summary['eval/loss']:.4f}  eval/accuracy {summary['eval/accuracy']:.3f}  "
        f"in {summary['wall_time_s']:.1f} s")
    return summary


def _to_boundary(cfg: Config, step: int) -> int:
    """Steps from ``step`` to the next one where the loop logs, evaluates, checkpoints or ends."""
    t = cfg.train
    next_multiple = lambda every: (step // every + 1) * every
    ends = [t.steps, next_multiple(cfg.logging.log_every), next_multiple(cfg.checkpoint.every_steps)]
    if t.eval_every:
        ends.append(next_multiple(t.eval_every))
    return min(ends) - step


def _recover(cfg: Config, runner: Runner, checkpointer: Checkpointer, err: WorkerLost, step: int, failures: list,
             tracker: Tracker, say) -> int:
    """New workers, newest readable checkpoint (or the initial state); returns the step to go on from."""
    checkpointer.wait()
    while True:
        failures.append(f"step {step}: {err}")
        if len(failures) > cfg.train.max_failures:
            raise RunFailed(f"{len(failures)} failures, more than train.max_failures={cfg.train.max_failures}: "
                            + "; ".join(failures))
        say(f"recovery {len(failures)}/{cfg.train.max_failures} at step {step}: {err}; starting new workers")
        try:
            runner.restart()
            break
        except WorkerLost as again:  # the new group lost a worker too, or could not join
            err = again
        except ClusterError as short:  # fewer than train.min_workers can be placed
            steps = checkpointer.steps()
            kept = f"the checkpoint of step {steps[-1]} is intact" if steps else "no checkpoint was saved yet"
            raise ClusterError(f"{short}; {kept}, continue with --resume") from None
    meta = restore_newest(checkpointer, runner)  # None: no checkpoint yet, the new workers' initial state
    resume_at = meta["step"] if meta else 0
    say(f"recovered: rank {err.rank}, cause: {err.cause}; restored step {resume_at}, "
        f"replaying {step - resume_at} step(s)")
    tracker.log({"system/recoveries": float(len(failures)), "system/replayed_steps": float(step - resume_at),
                 "system/pending_s": runner.pending_s}, step)
    return resume_at


def _perf(step_time_s: float, global_batch: int, timesteps: int) -> dict[str, float]:
    return {"perf/step_time_s": step_time_s,
            "perf/samples_per_s": global_batch / step_time_s,
            "perf/timesteps_per_s": global_batch * timesteps / step_time_s}


PICTURED_SAMPLES = np.arange(4)  # fixed samples, so pictures compare across steps


def _pictures(cfg: Config, runner: Runner) -> Callable[[], Pictures]:
    """The seed tutorial's pictures for sample 0, rate histograms over a few samples.

    The network runs now (it needs the runner); the drawing is returned, to
    run on the tracker's thread.
    """
    seen = runner.trace(PICTURED_SAMPLES[:runner.num_samples])

    def draw() -> Pictures:
        return network_pixels(seen["trace"], seen["inputs"], sample=0, dt_ms=cfg.data.dt_ms,
                              thresholds=[l.threshold for l in cfg.model.layers], label=int(seen["labels"][0]))

    return draw
