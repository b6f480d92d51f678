"""A ``Tracker`` backed by Weights & Biases (the real ``wandb`` package), and starting one.

Settings: the config's ``logging.wandb`` where set, else W&B's own
environment variables, else snndist's defaults (``resolve_settings``).
Monitoring is a side channel: a W&B that cannot start online (no network, a
refused or malformed key, a server error) or that fails mid-run never stops
training unless ``logging.wandb.on_error: fail`` asks for it.
"""
from __future__ import annotations

import math
import os
import socket
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

from snndist.config import WandbConfig
from snndist.errors import ConfigError, WandbError, one_line
from snndist.track.tracker import Pictures

STEP_METRIC = "trainer/step"
DEFAULT_BASE_URL = "https://api.wandb.ai"
PROBE_TIMEOUT_S = 3.0  # a server that does not even accept a connection in this long is unreachable
ONLINE_INIT_TIMEOUT_S = 20.0  # W&B's own default retries for 90 s


def _skip_unstaged_launch_inputs() -> None:
    """``wandb.init`` applies the inputs a W&B Launch job staged in this process; it imports W&B's whole Launch
    and public API to look (0.5 s of every run's start: W&B's artifact models build their field docs from
    source). Inputs are staged only through that module, so where it is not imported there are none."""
    import sys

    from wandb.sdk.wandb_run import Run

    apply = Run._detect_and_apply_job_inputs
    if getattr(apply, "snndist", False):
        return

    def apply_if_staged(run) -> None:
        if "wandb.sdk.launch.inputs.internal" in sys.modules:
            apply(run)

    apply_if_staged.snndist = True
    Run._detect_and_apply_job_inputs = apply_if_staged


class WandbSettings(NamedTuple):
    mode: str
    project: str
    entity: str | None
    group: str | None
    tags: tuple[str, ...]
    name: str | None


def resolve_settings(cfg: WandbConfig, environ: Mapping[str, str] | None = None,
                     default_name: str | None = None) -> WandbSettings:
    """Each setting from the config if set there, else from W&B's environment variable, else the default."""
    env = os.environ if environ is None else environ
    mode = cfg.mode or env.get("WANDB_MODE") or ("online" if env.get("WANDB_API_KEY") else "offline")
    if mode not in ("online", "offline", "disabled"):
        raise ConfigError(f"WANDB_MODE={mode!r}: must be one of online, offline, disabled")
    tags = cfg.tags or tuple(t.strip() for t in env.get("WANDB_TAGS", "").split(",") if t.strip())
    return WandbSettings(mode=mode, project=cfg.project or env.get("WANDB_PROJECT") or "snndist",
                         entity=cfg.entity or env.get("WANDB_ENTITY") or None,
                         group=cfg.group or env.get("WANDB_RUN_GROUP") or None, tags=tags,
                         name=cfg.name or env.get("WANDB_NAME") or default_name)


def _unreachable(base_url: str) -> str | None:
    """Why W&B's server cannot be reached (refused, no such host, no answer), or None if it accepts."""
    url = urllib.parse.urlsplit(base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as err:
        return f"cannot reach {base_url}: {err.strerror or type(err).__name__}"
    return None


def start_wandb(cfg: WandbConfig, run_dir: Path, config: Mapping[str, Any], *, run_id: str | None = None,
                default_name: str | None = None, say: Callable[[str], None] = print, system_stats: bool = False,
                logged_through: int | None = None) -> "WandbTracker | None":
    """The run's W&B tracker, or None when W&B is disabled (configured so, or after a failed start with
    ``on_error: disable``). ``run_dir`` is where W&B writes its files unless ``WANDB_DIR`` says elsewhere.

    Online first checks that W&B's server accepts a connection (seconds, not W&B's 90 s of retries);
    if it cannot start online, ``on_error`` says what happens: ``offline`` (warn, log offline for
    ``wandb sync`` later), ``disable`` (warn, metrics.jsonl only) or ``fail`` (WandbError, exit 2).
    """
    import wandb
    import wandb.util

    # W&B checks each logged value against pandas' DataFrame, and so imports pandas at the first log (0.45 s
    # of CPU, mid-run, beside the training loop). Told pandas is absent, it checks the value's type name.
    wandb.util.pd_available = False
    _skip_unstaged_launch_inputs()
    os.environ.setdefault("WANDB_SILENT", "true")  # W&B's own notices, e.g. its login line, stay off stderr
    settings = resolve_settings(cfg, default_name=default_name)
    if settings.mode == "disabled":
        return None
    wandb_dir = Path(os.environ.get("WANDB_DIR") or run_dir)
    secret = os.environ.get("WANDB_API_KEY")

    def init(mode: str):
        wandb_dir.mkdir(parents=True, exist_ok=True)
        return wandb.init(
            dir=str(wandb_dir), mode=mode, project=settings.project, entity=settings.entity, group=settings.group,
            tags=list(settings.tags) or None, name=settings.name, id=run_id, resume="allow" if run_id else None,
            config=_scrub(dict(config), secret), reinit="create_new",
            settings=wandb.Settings(silent=True, quiet=True, console="off", show_warnings=False,
                                    x_disable_stats=not system_stats, init_timeout=ONLINE_INIT_TIMEOUT_S,
                                    finish_timeout=60.0, save_code=False))

    if settings.mode == "online":
        problem = _unreachable(os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL)
        if problem is None:
            try:
                return WandbTracker(init("online"), cfg.on_error, say, logged_through if run_id else None)
            except Exception as err:  # wandb raises CommError, AuthenticationError, UsageError, ...
                problem = _scrub(f"{type(err).__name__}: {one_line(err, 200)}", secret)
                _teardown(wandb)
        if cfg.on_error == "fail":
            raise WandbError(f"W&B could not start online ({problem}); logging.wandb.on_error=fail stops the run")
        if cfg.on_error == "disable":
            say(f"warning: W&B could not start online ({problem}); logging.wandb.on_error=disable: this run "
                "logs to metrics.jsonl only")
            return None
        say(f"warning: W&B could not start online ({problem}); logging this run offline instead: upload it later "
            f"with `wandb sync {wandb_dir / 'wandb'}/offline-run-*`")
    return WandbTracker(init("offline"), cfg.on_error, say, logged_through if run_id else None)


def _teardown(wandb) -> None:
    """End this process's W&B service connection after W&B failed, so that its exit hook has nothing to
    raise about (it would print a traceback at exit)."""
    try:
        wandb.teardown()
    except Exception:  # noqa: BLE001 - the service is gone or broken: that is why we are here
        pass


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

    It wraps a W&B run that ``start_wandb`` opened. Resume: ``start_wandb``
    takes the ``run_id`` saved with the checkpoint (``tracker.run_id``) and
    reopens the run with ``resume="allow"``. Steps in W&B must increase,
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
    itself is never passed, printed or written by snndist. Console
    capture is off and W&B's own output silenced. A W&B call that raises
    (its service died, say) is said once and W&B is not used again in the
    run, or, with ``on_error: fail``, stops the run with a ``WandbError``.
    """

    takes_images = True

    def __init__(self, run, on_error: str = "offline", say: Callable[[str], None] = print,
                 logged_through: int | None = None):
        import wandb

        self._wandb = wandb
        self.run, self.on_error, self.say = run, on_error, say
        self.mode = "offline" if run.offline else "online"
        self.run_id: str = run.id
        self.run.define_metric(STEP_METRIC)
        self.run.define_metric("*", step_metric=STEP_METRIC)
        self.resumed_step: int | None = self._find_resumed_step(logged_through)
        self._last_step: int | None = None  # the last step logged in this session
        self._warned: set[str] = set()
        self._finished = False
        self._broken = False

    @property
    def run_file(self) -> Path:
        """This session's ``.wandb`` transaction log."""
        return Path(self.run.settings.sync_file)

    def _find_resumed_step(self, logged_through: int | None) -> int | None:
        steps = [] if logged_through is None else [logged_through]
        starting = getattr(self.run, "starting_step", 0) or 0
        if starting > 0:
            steps.append(int(starting) - 1)
        restored = _last_step_in(dict(self.run.summary))
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

    def _guarded(self, what: str, call: Callable[[], None]) -> None:
        """Run a W&B call; if W&B fails (its service died, a call raised), say so once and stop using it,
        unless ``on_error: fail`` asks for the run to stop."""
        if self._broken:
            return
        try:
            call()
        except Exception as err:  # anything W&B raises: monitoring must not end the run
            self._broken = True
            problem = f"{type(err).__name__}: {one_line(err, 200)}"
            _teardown(self._wandb)
            if self.on_error == "fail":
                raise WandbError(f"W&B failed while {what} ({problem}); logging.wandb.on_error=fail stops the "
                                 "run") from None
            self.say(f"warning: W&B failed while {what} ({problem}); training goes on without it, "
                     "metrics.jsonl keeps every row")

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self._finished or not self._accept(step, "metrics"):
            return
        row = {k: _scalar(v) for k, v in metrics.items()}
        row[STEP_METRIC] = int(step)
        self._guarded(f"logging step {step}", lambda: self.run.log(row, step=int(step)))

    def log_images(self, images: Callable[[], Pictures], step: int) -> None:
        """Draw ``images`` and log each ``(RGB array, caption)`` as a ``wandb.Image`` at ``step``."""
        if self._finished or self._broken or not self._accept(step, "images"):
            return
        row: dict[str, Any] = {k: self._wandb.Image(rgb, caption=caption) for k, (rgb, caption) in images().items()}
        row[STEP_METRIC] = int(step)
        self._guarded(f"logging pictures at step {step}", lambda: self.run.log(row, step=int(step)))

    def summary(self, metrics: dict[str, float]) -> None:
        if self._finished:
            return
        self._guarded("writing the summary", lambda: self.run.summary.update(
            {k: _scalar(v) for k, v in metrics.items()}))

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._guarded("finishing the run", self.run.finish)
