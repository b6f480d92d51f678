"""Checkpoints: Orbax ``CheckpointManager`` under ``RUN_DIR/checkpoints``.

Each checkpoint is a Composite of three items: ``params`` (a plain pytree of
arrays, restorable with Orbax alone), ``opt_state`` and ``meta`` (JSON: step,
skipped steps, data position, config hash, W&B run id, topology, seeds).
Only the coordinator writes; states travel as host arrays, so a checkpoint
restores onto any topology. Saves are asynchronous: ``save`` returns once the
arrays are handed to Orbax's writer thread.

A checkpoint that cannot be read (killed mid-save, a truncated file) is
skipped with a warning and, once an older one has been read, moved aside to
``<step>.unreadable-<time>`` (never deleted), so that later saves of that
step are not blocked. If none can be read, nothing is moved and it is an
error.
"""
from __future__ import annotations

import errno
import logging
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

from snndist.config import CheckpointConfig
from snndist.errors import CheckpointError, StorageError, one_line
from snndist.store.rundir import is_remote, run_path

ITEMS = ("params", "opt_state", "meta")


class _OrbaxErrorsAreOurs(logging.Filter):
    """Orbax logs a failed save with full tracebacks from its threads (through absl, and asyncio's
    "Task exception was never retrieved"); snndist reports every failed save and unreadable checkpoint
    itself, in one line, so only their warnings and info pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


for _name in ("absl", "asyncio"):
    logging.getLogger(_name).addFilter(_OrbaxErrorsAreOurs())


def _drop_late_tensorstore_callbacks(report: Any, _previous=sys.unraisablehook) -> None:
    """After a failed save Orbax closes its event loop while TensorStore still has writes in flight; as
    each finishes, TensorStore's thread calls back into the closed loop and the error, with no object
    to blame, reaches this hook. The failure itself is reported once, by ``Checkpointer.check``."""
    late = isinstance(report.exc_value, RuntimeError) and str(report.exc_value) == "Event loop is closed"
    if not (late and report.object is None):
        _previous(report)


sys.unraisablehook = _drop_late_tensorstore_callbacks


class Checkpointer:
    def __init__(self, run_dir: epath.Path, cfg: CheckpointConfig, say: Callable[[str], None] = print):
        self.directory = run_path(run_dir) / "checkpoints"
        if not is_remote(self.directory):
            self.directory = self.directory.absolute()
        self.say = say
        keep: list = [policies.LatestN(cfg.keep)]
        if cfg.keep_best:
            keep.append(policies.BestN(get_metric_fn=lambda m: m[cfg.best_metric], n=cfg.keep_best,
                                       reverse=cfg.best_mode == "min", keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(preservation_policy=policies.AnyPreservationPolicy(keep),
                                               enable_async_checkpointing=True, create=True)
        self.manager = ocp.CheckpointManager(self.directory, item_names=ITEMS, options=options)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snndist-checkpoint")
        self._pending: Future | None = None

    def steps(self) -> list[int]:
        self.wait()
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: dict, meta: dict, metrics: dict | None = None) -> float:
        """Start saving ``state`` ({params, opt_state}, host arrays); returns seconds the caller was blocked.

        Orbax's own async save still spends ~30 ms in the caller (directories,
        metadata) before its writer thread takes over, so the whole call runs
        on a thread of ours; the caller waits only for the previous save.
        """
        began = time.perf_counter()
        if self._pending is not None:
            self._result()  # one save at a time; raises what the last one raised
        self._pending = self._thread.submit(self._save, step, state, meta, metrics)
        self._pending_step = step
        return time.perf_counter() - began

    def check(self) -> None:
        """Raise StorageError now if the save in flight failed (disk full, say): the loop asks every step."""
        if self._pending is not None and self._pending.done():
            self._result()

    def _result(self) -> None:
        pending, self._pending = self._pending, None
        try:
            pending.result()
        except Exception as err:
            cause = "no space left on device" if _disk_full(err) else f"{type(err).__name__}: {one_line(err, 200)}"
            raise StorageError(f"cannot write checkpoint {self.directory / str(self._pending_step)}: {cause} "
                               "(the newest committed checkpoint is intact; free the space and continue with "
                               "--resume)") from None

    def _save(self, step: int, state: dict, meta: dict, metrics: dict | None) -> None:
        if step in self.manager.all_steps():  # e.g. a stop signal right after a periodic save
            return
        for leaf in _leaves(state["params"]):
            if not np.all(np.isfinite(leaf)):
                self.say(f"warning: not saving step {step}: parameters are not finite")
                return
        self.manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(state["params"]), opt_state=ocp.args.StandardSave(state["opt_state"]),
            meta=ocp.args.JsonSave(meta)), metrics=metrics, force=True)
        # On this thread, not the trainer's: a failed write (disk full) then shows in ``check`` at once.
        self.manager.wait_until_finished()

    def wait(self) -> None:
        """Block until every save has committed."""
        if self._pending is not None:
            self._result()
        self.manager.wait_until_finished()

    def restore_latest(self, exemplar: dict) -> tuple[dict, dict] | None:
        """The newest readable checkpoint as (state, meta); None if there is none.

        ``exemplar`` ({params, opt_state}, host arrays) gives the structure.
        Raises CheckpointError when checkpoints exist but none can be read.
        """
        steps = self.steps()
        unreadable = []
        for step in reversed(steps):
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(exemplar["params"]),
                    opt_state=ocp.args.StandardRestore(exemplar["opt_state"]), meta=ocp.args.JsonRestore()))
            except Exception as err:  # any unreadable part makes the whole checkpoint unusable
                self.say(f"warning: checkpoint {self.directory / str(step)} is unreadable "
                         f"({type(err).__name__}: {one_line(err, 200)}); trying an older one")
                unreadable.append(step)
                continue
            # Only now, with a good one in hand, move the bad ones out of the way.
            for bad in unreadable:
                self._set_aside(bad)
            return {"params": restored["params"], "opt_state": restored["opt_state"]}, dict(restored["meta"])
        if steps:
            raise CheckpointError(f"{self.directory}: none of the checkpoints {steps} can be read; "
                                  "pass --restart to start the run over on purpose")
        return None

    def restore_params(self, step: int | None = None) -> tuple[int, dict]:
        """The parameters alone (host arrays) of checkpoint ``step``, or of the newest; (step, params)."""
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"{self.directory}: no checkpoint")
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise CheckpointError(f"{self.directory}: no checkpoint of step {step} (there are {steps})")
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore()))
        except Exception as err:
            raise CheckpointError(f"{self.directory / str(step)}: unreadable ({type(err).__name__}: "
                                  f"{one_line(err, 200)})") from None
        return step, {k: {n: np.asarray(v) for n, v in p.items()} for k, p in restored["params"].items()}

    def _set_aside(self, step: int) -> None:
        path = self.directory / str(step)
        if path.exists():
            path.rename(self.directory / f"{step}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
        self.manager.reload()

    def close(self) -> None:
        self.wait()
        self._thread.shutdown()
        self.manager.close()


def _disk_full(err: BaseException) -> bool:
    """ENOSPC from Python's own writes, or inside TensorStore's text (it raises ``ValueError:
    RESOURCE_EXHAUSTED: ... No space left on device [os_error_code='28']``)."""
    return getattr(err, "errno", None) == errno.ENOSPC or "No space left on device" in str(err)


def _leaves(tree: Any) -> list:
    if isinstance(tree, dict):
        return [leaf for v in tree.values() for leaf in _leaves(v)]
    if isinstance(tree, (list, tuple)):
        return [leaf for v in tree for leaf in _leaves(v)]
    return [np.asarray(tree)]
