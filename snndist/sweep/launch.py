"""A sweep from the command line: start or resume it on Ray, then report what it found."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from snndist.config import Config
from snndist.errors import ConfigError, Preempted, RunFailed
from snndist.sweep import results
from snndist.sweep.space import Sweep
from snndist.sweep.sweep_dir import open_sweep, start


def sweep(base: Config, sweep_file: str, sweep_dir: str, say: Callable[[str], None] = print) -> int:
    """Run a new sweep of ``sweep_file`` over ``base`` in ``sweep_dir``."""
    if sweep_dir.startswith("gs://"):
        raise ConfigError(f"--run-dir {sweep_dir}: a sweep directory must be a path on a filesystem every node "
                          "shares (Ray Tune keeps its state there), not gs://")
    sweep_dir = Path(sweep_dir)
    spec = start(base, sweep_file, sweep_dir)
    say(f"sweep directory: {sweep_dir}")
    return _run(spec, base, sweep_dir, resume=False, say=say)


def resume(sweep_dir: Path, address: str | None = None, say: Callable[[str], None] = print) -> int:
    """Continue a stopped sweep: finished trials stay, unfinished ones resume from their checkpoints; on the
    Ray cluster at ``address`` (a restarted head's, say), else where it ran."""
    spec, base = open_sweep(sweep_dir)
    if address:
        base = dataclasses.replace(base, cluster=dataclasses.replace(base.cluster, address=address))
    return _run(spec, base, sweep_dir, resume=True, say=say)


def status(sweep_dir: Path, say: Callable[[str], None] = print) -> None:
    """The table as the sweep stands (running or ended), best.yaml and the picture."""
    spec, base = open_sweep(sweep_dir)
    report(spec, base, sweep_dir, say)


def _run(spec: Sweep, base: Config, sweep_dir: Path, *, resume: bool, say) -> int:
    import ray

    from snndist.dist import cluster
    from snndist.sweep.tuner import run

    started = cluster.connect(base.cluster.address, base.train.workers, base.cluster.cpus_per_worker)
    try:
        run(spec, base, sweep_dir, resume=resume, say=say)
    finally:
        if started:
            ray.shutdown()
    rows, samples = report(spec, base, sweep_dir, say)
    unfinished = [r for r in rows if r.status in ("pending", "running")]
    if unfinished or len(rows) < samples:
        raise Preempted(f"the sweep stopped with {len(unfinished)} trial(s) unfinished and {samples - len(rows)} "
                        f"not started; continue with snndist sweep --resume {sweep_dir}")
    if all(r.status == "error" for r in rows):
        raise RunFailed(f"every trial of the sweep failed, the first with: {rows[0].error}")
    return 0


def report(spec: Sweep, base: Config, sweep_dir: Path, say) -> tuple[list[results.TrialRow], int]:
    """Print the table, write best.yaml and the picture; the trials so far and how many the sweep has."""
    rows, samples = results.read_state(sweep_dir)
    if not rows:
        say(f"{sweep_dir}: no trial has started yet")
        return rows, samples
    say(results.table(rows, spec, samples))
    best = results.best(rows, spec.mode)
    if best is None:
        say(f"no trial has trained all its steps yet: no {results.BEST}")
    else:
        path = results.write_best(sweep_dir, best, base.to_dict()["logging"]["wandb"])
        say(f"best: trial {best.id}, {spec.metric} {best.value:.6g}; its config: {path} "
            f"(snndist train --config {path})")
    picture = results.plot(sweep_dir, rows, spec)
    if picture:
        say(f"wrote {picture}")
    return rows, samples
