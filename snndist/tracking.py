"""Where metrics go: a small tracker interface with a JSONL version.

Only the process that owns the run (the coordinator) holds a tracker.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Protocol


class Tracker(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...
    def summary(self, metrics: dict[str, float]) -> None: ...
    def finish(self) -> None: ...


def _jsonable(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no NaN/Inf


class JsonlTracker:
    """``metrics.jsonl`` (one object per logged step) and ``summary.json``."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._file = open(self.run_dir / "metrics.jsonl", "a")
        self._summary: dict[str, float] = {}

    def log(self, metrics: dict[str, float], step: int) -> None:
        row = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def summary(self, metrics: dict[str, float]) -> None:
        self._summary.update(metrics)

    def finish(self) -> None:
        self._file.close()
        summary = {k: _jsonable(v) if isinstance(v, float) else v for k, v in self._summary.items()}
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


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

    def log_images(self, images: dict, step: int) -> None:
        """To the trackers that take images (the others have no ``log_images``)."""
        takers = [t for t in self.trackers if hasattr(t, "log_images")]
        for t in takers:
            t.log_images(images, step)
        if not takers:
            from snndist.figures import close

            for fig in images.values():
                close(fig)

    @property
    def takes_images(self) -> bool:
        return any(hasattr(t, "log_images") for t in self.trackers)

    def finish(self) -> None:
        for t in self.trackers:
            t.finish()
