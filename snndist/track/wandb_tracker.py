"""A ``Tracker`` backed by Weights & Biases (the real ``wandb`` package).

Offline unless told otherwise: ``WandbConfig.mode`` if set, else ``online``
when ``WANDB_API_KEY`` is set, else ``offline`` (``wandb sync`` uploads later).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from snndist.config import WandbConfig
from snndist.track.tracker import Pictures

STEP_METRIC = "trainer/step"


def resolve_mode(cfg: WandbConfig, environ: Mapping[str, str] | None = None) -> str:
    """``cfg.mode`` if set, else ``online`` with ``WANDB_API_KEY`` in the environment, else ``offline``."""
    environ = os.environ if environ is None else environ
    if cfg.mode:
        return cfg.mode
    return "online" if environ.get("WANDB_API_KEY") else "offline"


def _last_step_in(summary: Mapping[str, Any]) -> int | None:
    """The last history step a resumed run's summary records (``trainer/step`` or ``_step``), or None."""
    steps = [int(v) for v in (summary.get("_step"), summary.get(STEP_METRIC))
             if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    return max(steps) if steps else None


def _scrub(value: Any, secret: str | None) -> Any:
    """A copy of ``value`` (nested dicts, lists, tuples) with ``secret`` cut out of every string."""
    if isinstance(value, Mapping):
        return {str(k): _scrub(v, secret) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, secret) for v in value]
    if secret and isinstance(value, str) and secret in value:
        return value.replace(secret, "<redacted>")
    return value


def _scalar(value: Any) -> Any:
    """Numbers (Python, numpy or jax scalars) as Python floats or ints; anything else as it is."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    try:
        return value.item() if getattr(value, "size", 2) == 1 else value
    except (AttributeError, TypeError, ValueError):
        return value


class WandbTracker:
    """A ``Tracker``: metrics, pictures and a summary in one W&B run, x-axis the training step.

    Every ``log(metrics, step)`` goes to W&B as ``{**metrics, "trainer/step":
    step}`` with W&B's own step equal to ``step`` too, and
    ``define_metric("*", step_metric="trainer/step")`` makes every chart use
    the training step. ``log_images`` logs ``(RGB array, caption)`` pairs as
    ``wandb.Image``; ``summary`` writes ``run.summary``; ``finish`` ends the
    run, waiting at most ``finish_timeout_s`` for uploads (what is left stays
    on disk for ``wandb sync``).

    Resume: pass the ``run_id`` saved with the checkpoint (``tracker.run_id``);
    the run is reopened with ``resume="allow"``. Steps in W&B must increase,
    and after a resume from a checkpoint older than the last logged step W&B
    may already hold later steps: this tracker does NOT log them again. The
    last step W&B holds, ``resumed_step``, is the largest of

    - ``logged_through``: the last step of the run's ``metrics.jsonl``. Every
      step snndist logs goes there first (pictures only at logged steps, see
      ``snndist.run.loop.fit``), so W&B holds no later step. This is
      the one source for an offline run, which knows nothing of its earlier
      segments (``wandb sync`` merges them by id later);
    - ``run.starting_step - 1`` and the resumed summary's ``trainer/step`` /
      ``_step``: what the server reports on an online resume.

    Every ``log``/``log_images`` whose step is <= ``resumed_step`` is
    dropped, said once through ``say``. Within one session a step below the
    last logged step is dropped too (W&B would drop it with a warning); a
    step equal to it is merged into the same W&B row.

    The config W&B stores is ``config`` as given (copied, with the value of
    ``WANDB_API_KEY`` cut out of any string should it be there); the key
    itself is never passed, printed or written by this class. Console
    capture is off and W&B's own output silenced.
    """

    takes_images = True

    def __init__(self, run_dir: Path, cfg: WandbConfig, config: Mapping[str, Any], run_id: str | None = None,
                 default_name: str | None = None, say: Callable[[str], None] = print,
                 system_stats: bool = True, init_timeout_s: float = 90.0, finish_timeout_s: float = 60.0,
                 logged_through: int | None = None):
        import wandb

        self._wandb = wandb
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.say = say
        self.mode = resolve_mode(cfg)
        secret = os.environ.get("WANDB_API_KEY")
        settings = wandb.Settings(silent=True, quiet=True, console="off", show_warnings=False,
                                  x_disable_stats=not system_stats, init_timeout=init_timeout_s,
                                  finish_timeout=finish_timeout_s, save_code=False)
        self.run = wandb.init(
            dir=str(self.run_dir), mode=self.mode, project=cfg.project, entity=cfg.entity, group=cfg.group,
            tags=list(cfg.tags) or None, name=cfg.name or default_name, id=run_id,
            resume="allow" if run_id else None, config=_scrub(dict(config), secret),
            settings=settings, reinit="create_new")
        self.run_id: str = self.run.id
        self.run.define_metric(STEP_METRIC)
        self.run.define_metric("*", step_metric=STEP_METRIC)
        self.resumed_step: int | None = self._find_resumed_step(logged_through) if run_id else None
        self._last_step: int | None = None  # the last step logged in this session
        self._warned: set[str] = set()
        self._finished = False

    @property
    def run_file(self) -> Path | None:
        """This session's ``.wandb`` transaction log, where W&B offers one (not in mode ``disabled``)."""
        if self.mode == "disabled" or getattr(self.run, "disabled", False):
            return None
        try:
            path = self.run.settings.sync_file
        except AttributeError:
            return None
        return Path(path) if path else None

    def _find_resumed_step(self, logged_through: int | None) -> int | None:
        steps = [] if logged_through is None else [logged_through]
        starting = getattr(self.run, "starting_step", 0) or 0
        if starting > 0:
            steps.append(int(starting) - 1)
        try:
            restored = _last_step_in(dict(self.run.summary))
        except Exception:  # noqa: BLE001 - a disabled run has no real summary
            restored = None
        if restored is not None:
            steps.append(restored)
        return max(steps) if steps else None

    def _accept(self, step: int, what: str) -> bool:
        step = int(step)
        if self.resumed_step is not None and step <= self.resumed_step:
            if "resumed" not in self._warned:
                self._warned.add("resumed")
                self.say(f"warning: W&B run {self.run_id} already holds steps up to {self.resumed_step}; "
                         f"not logging {what} at steps <= {self.resumed_step} again (first: step {step})")
            return False
        if self._last_step is not None and step < self._last_step:
            if "backwards" not in self._warned:
                self._warned.add("backwards")
                self.say(f"warning: W&B steps must increase: dropping {what} at step {step} "
                         f"after step {self._last_step} (said once)")
            return False
        self._last_step = step
        return True

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self._finished or not self._accept(step, "metrics"):
            return
        row = {k: _scalar(v) for k, v in metrics.items()}
        row[STEP_METRIC] = int(step)
        self.run.log(row, step=int(step))

    def log_images(self, images: Callable[[], Pictures], step: int) -> None:
        """Draw ``images`` and log each ``(RGB array, caption)`` as a ``wandb.Image`` at ``step``."""
        if self._finished or not self._accept(step, "images"):
            return
        row: dict[str, Any] = {k: self._wandb.Image(rgb, caption=caption) for k, (rgb, caption) in images().items()}
        row[STEP_METRIC] = int(step)
        self.run.log(row, step=int(step))

    def summary(self, metrics: dict[str, float]) -> None:
        if self._finished:
            return
        self.run.summary.update({k: _scalar(v) for k, v in metrics.items()})

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self.run.finish()
