"""Starting a training run: new or resumed, local or on Ray; trackers and checkpoints."""
from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Callable

from etils import epath

from snndist.config import Config, config_hash, dump_yaml, load_config, resumable_fields
from snndist.errors import ConfigError, OutOfMemory, one_line, out_of_device_memory
from snndist.run.loop import StopSignal, fit, restore_newest
from snndist.store.lease import RunLease
from snndist.store.rundir import check_run_dir_free, is_remote, local_dir_for, open_run_dir
from snndist.track.tracker import BackgroundTracker, JsonlTracker, MultiTracker, Tracker, last_logged_step
from snndist.train.runner import Runner


def resume_config(run_dir: str | Path, overrides: list[str]) -> Config:
    """The run's saved config with ``overrides``, which may not change the math."""
    saved_path = open_run_dir(run_dir) / "config.yaml"
    if not saved_path.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.yaml)")
    saved = load_config(saved_path)
    cfg = load_config(saved_path, overrides)
    if config_hash(cfg) != config_hash(saved):
        changed = _changed_fields(saved.to_dict(), cfg.to_dict())
        raise ConfigError(f"--set {changed[0]}: cannot change on --resume, it changes what a step computes; "
                          f"only {', '.join(resumable_fields())} can")
    return cfg


def _changed_fields(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [c for k in a for c in _changed_fields(a[k], b.get(k), f"{path}.{k}" if path else k)]
    return [path] if a != b else []


def train(cfg: Config, run_dir: str | Path, *, local: bool, resume: bool = False, restart: bool = False,
          say: Callable[[str], None] = print, report: Tracker | None = None) -> dict:
    """Run (or continue) the training ``cfg`` describes in ``run_dir``; returns the summary. ``report``:
    one more tracker, called on the training thread (a sweep trial's report to Ray Tune)."""
    run_dir = open_run_dir(run_dir)
    if not resume:
        check_run_dir_free(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLease(run_dir, cfg.checkpoint.lease_timeout_s, say=say) as lease:
        return _run(cfg, run_dir, lease, local=local, resume=resume, restart=restart, say=say, report=report)


def _run(cfg: Config, run_dir: epath.Path, lease: RunLease, *, local: bool, resume: bool, restart: bool,
         say: Callable[[str], None], report: Tracker | None) -> dict:
    # W&B starts in this thread, after the runner: on CPython 3.11 importing W&B in a second thread (pydantic
    # parses its classes' source) while this one imports or compiles can fail with "AST constructor
    # recursion depth mismatch" (CPython gh-106905); a resumed run must also first read which W&B run it
    # continues. Ray's workers go on starting meanwhile (their processes, imports, replicas).
    runner = _runner(cfg, run_dir, local, say)
    from snndist.store.checkpoint import Checkpointer  # Orbax and JAX (1.1 s) while Ray's workers start

    # After the runner: ray.init installs a SIGTERM handler of its own that ends the process at once.
    stop = StopSignal().install()
    try:
        if not is_remote(run_dir):  # gs:// is the same from every node
            _check_shared(runner, run_dir)
        if restart and (run_dir / "checkpoints").exists():
            aside = run_dir / f"checkpoints.before-restart-{time.strftime('%Y%m%d-%H%M%S')}"
            (run_dir / "checkpoints").rename(aside)
            say(f"--restart: earlier checkpoints kept in {aside}")
        start_step, wandb_run_id, checkpointer = 0, None, None
        if resume:
            checkpointer = Checkpointer(run_dir, cfg.checkpoint, say=say)
            meta = restore_newest(checkpointer, runner)
            if meta is None:
                say(f"{run_dir}: no checkpoint yet; starting at step 0")
            else:
                if meta.get("config_hash") != config_hash(cfg):
                    raise ConfigError(f"{run_dir}/config.yaml: its math differs from the checkpoint's "
                                      f"(hash {meta.get('config_hash')} != {config_hash(cfg)}); was it edited?")
                start_step, wandb_run_id = meta["step"], meta.get("wandb_run_id")
                say(f"resumed at step {start_step} (saved on {meta['topology']})")
        # W&B before the run's own files: if it may stop the run (on_error: fail), a new run leaves
        # nothing that would refuse the same command once W&B is back.
        wandb = _wandb(cfg, run_dir, wandb_run_id, last_logged_step(run_dir), say)
        try:  # before the run's own files: a worker that cannot start leaves none (as with --local)
            runner.ready()
        except BaseException:
            if wandb:
                wandb.finish()
            raise
        (run_dir / "config.yaml").write_text(dump_yaml(cfg))
        checkpointer = checkpointer or Checkpointer(run_dir, cfg.checkpoint, say=say)
        meta = {"wandb_run_id": wandb.run_id if wandb else None}
        tracker = BackgroundTracker(MultiTracker(JsonlTracker(run_dir), *([wandb] if wandb else [])))
        if report is not None:
            tracker = MultiTracker(tracker, report)
        try:
            summary = fit(cfg, runner, tracker, checkpointer, start_step=start_step, stop=stop, meta=meta, say=say,
                          lease=lease)
        except BaseException as err:
            for close in (tracker.finish, checkpointer.close):  # the first error is the one to report
                try:
                    close()
                except Exception:  # noqa: BLE001 - e.g. the same full disk again
                    pass
            if out_of_device_memory(err):  # in this process (--local): XLA could not allocate
                raise OutOfMemory(f"out of device memory ({one_line(err, 200)}); {OutOfMemory.HINT}") from None
            raise
        tracker.finish()
        checkpointer.close()
        return summary
    finally:
        runner.close()


def _check_shared(runner: Runner, run_dir: epath.Path) -> None:
    """Before anything is written: every worker's node must see the run directory (a new marker file)."""
    marker = run_dir.absolute() / f".visible-{secrets.token_hex(8)}"
    marker.touch()
    try:
        runner.check_visible(str(marker), str(run_dir))
    finally:
        marker.unlink()


def _wandb(cfg: Config, run_dir: epath.Path, run_id: str | None, logged_through: int | None, say):
    """The W&B tracker, or None without W&B; it continues ``run_id`` on resume, where metrics.jsonl
    says which steps W&B already holds (``logged_through``).

    W&B writes its files on this machine: in the run directory, or for gs:// in a local mirror of it.
    """
    from snndist.track.wandb_tracker import start_wandb

    local = local_dir_for(run_dir)
    tracker = start_wandb(cfg.logging.wandb, local, cfg.to_dict(), run_id=run_id, default_name=run_dir.name,
                          say=say, system_stats=cfg.logging.wandb.system_stats, logged_through=logged_through)
    if tracker is not None:
        say(f"W&B: run {tracker.run_id} ({tracker.mode}"
            + (", sync later with `wandb sync`" if tracker.mode == "offline" else "")
            + (f"; its local files in {tracker.run_file.parent}" if is_remote(run_dir) else "") + ")")
    return tracker


def _runner(cfg: Config, run_dir: epath.Path, local: bool, say) -> Runner:
    if local:
        from snndist.train.local import LocalRunner

        return LocalRunner(cfg)
    from snndist.dist.coordinator import RayRunner

    return RayRunner(cfg, run_dir.name, say=say, wait=False)
