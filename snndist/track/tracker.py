"""Where metrics go: the tracker interface, metrics.jsonl, and trackers that combine others.

Only the process that owns the run (the coordinator) holds a tracker.
"""
from __future__ import annotations

import json
import math
import queue
import threading
from typing import Callable, Mapping, Protocol

from etils import epath

from snndist.errors import StorageError
from snndist.store.rundir import is_remote

# name -> (RGB uint8 array [height, width, 3], caption), as ``pixels.network_pixels`` draws them
Pictures = Mapping[str, tuple]


class Tracker(Protocol):
    takes_images: bool  # False: ``log_images`` stores nothing, so callers need not draw

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record ``metrics`` at training step ``step`` (steps only increase)."""

    def log_images(self, images: Callable[[], Pictures], step: int) -> None:
        """Record pictures at ``step``; ``images`` draws them, called only by a tracker that takes images."""

    def summary(self, metrics: dict[str, float]) -> None:
        """The run's final metrics."""

    def finish(self) -> None:
        """Flush and close; the tracker is not used after this."""


class NullTracker:
    """Records nothing."""

    takes_images = False

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_images(self, images: Callable[[], Pictures], step: int) -> None:
        pass

    def summary(self, metrics: dict[str, float]) -> None:
        pass

    def finish(self) -> None:
        pass


def _jsonable(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no NaN/Inf


class JsonlTracker:
    """``metrics.jsonl`` (one object per logged step, appended on resume) and ``summary.json``.

    Each step is recorded once: steps replayed after a recovery or a resume
    from an older checkpoint, which an earlier row already holds, are not
    written again (the replay computes the same numbers). A step may have
    several rows in one session (train, eval, a recovery), in order.

    Cloud Storage has no append: there the whole file is written again at
    each log (a few hundred bytes a row, on the tracker thread). Pictures are
    not stored here.
    """

    takes_images = False

    def __init__(self, run_dir: epath.Path):
        self.run_dir = run_dir
        path = run_dir / "metrics.jsonl"
        self._path, self._file = path, None
        self._earlier = last_logged_step(run_dir)  # what earlier sessions logged, up to this step
        self._last: int | None = None  # the last step this session logged
        self._kinds_at_last: set[frozenset] = set()  # the rows written at it (train, eval, ...), by their names
        if is_remote(run_dir):
            self._text = path.read_text() if path.exists() else ""
        else:
            self._file = open(path, "a")
        self._summary: dict[str, float] = {}

    def log(self, metrics: dict[str, float], step: int) -> None:
        kind = frozenset(metrics)
        if (self._earlier is not None and step <= self._earlier) or (self._last is not None and step < self._last) \
                or (step == self._last and kind in self._kinds_at_last):
            return  # a replayed step: its row is there
        if step != self._last:
            self._last, self._kinds_at_last = step, set()
        self._kinds_at_last.add(kind)
        line = json.dumps({"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}) + "\n"
        try:
            if self._file is None:
                self._text += line
                self._path.write_text(self._text)
            else:
                self._file.write(line)
                self._file.flush()
        except OSError as err:
            raise StorageError(f"cannot write {self._path}: {err.strerror or err}") from None

    def log_images(self, images: Callable[[], Pictures], step: int) -> None:
        pass

    def summary(self, metrics: dict[str, float]) -> None:
        self._summary.update(metrics)

    def finish(self) -> None:
        if self._file is not None:
            self._file.close()
        summary = {k: _jsonable(v) if isinstance(v, float) else v for k, v in self._summary.items()}
        try:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        except OSError as err:
            raise StorageError(f"cannot write {self.run_dir / 'summary.json'}: {err.strerror or err}") from None


def last_logged_step(run_dir: epath.Path) -> int | None:
    """The last step an earlier session of the run logged to metrics.jsonl (None: none), e.g. before a crash."""
    path = run_dir / "metrics.jsonl"
    text = path.read_text() if path.exists() else ""
    return max((int(json.loads(line)["step"]) for line in text.splitlines() if line.strip()), default=None)


class MultiTracker:
    """Fans every call out to several trackers."""

    def __init__(self, *trackers: Tracker):
        self.trackers = trackers

    def log(self, metrics: dict[str, float], step: int) -> None:
        for t in self.trackers:
            t.log(metrics, step)

    def summary(self, metrics: dict[str, float]) -> None:
        for t in self.trackers:
            t.summary(metrics)

    def log_images(self, images: Callable[[], Pictures], step: int) -> None:
        """Draws once, for the trackers that take images."""
        takers = [t for t in self.trackers if t.takes_images]
        if takers:
            drawn = images()
            for t in takers:
                t.log_images(lambda: drawn, step)

    @property
    def takes_images(self) -> bool:
        return any(t.takes_images for t in self.trackers)

    def finish(self) -> None:
        for t in self.trackers:
            t.finish()


class BackgroundTracker:
    """Runs another tracker's calls, in order, on a thread of its own.

    Drawing and writing images takes far longer than a training step (about
    0.5 s a set against 3 ms at the tutorial config); on this thread they
    overlap training instead of stopping it. Calls keep their order, so steps
    still reach W&B in increasing order. An error there is raised by the next call.
    """

    def __init__(self, tracker: Tracker, max_pending: int = 64):
        self.tracker = tracker
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="snndist-tracker", daemon=True)
        self._thread.start()

    @property
    def takes_images(self) -> bool:
        return self.tracker.takes_images

    def _work(self) -> None:
        while True:
            call = self._queue.get()
            if call is None:
                return
            if self._error is None:
                try:
                    call()
                except BaseException as err:  # re-raised on the caller's thread
                    self._error = err

    def _put(self, call) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(call)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._put(lambda: self.tracker.log(metrics, step))

    def log_images(self, images: Callable[[], Pictures], step: int) -> None:
        self._put(lambda: self.tracker.log_images(images, step))

    def summary(self, metrics: dict[str, float]) -> None:
        self._put(lambda: self.tracker.summary(metrics))

    def finish(self) -> None:
        self._queue.put(lambda: self.tracker.finish())
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
