"""Progress on the terminal: a live bar when attached to one, plain lines when not (job logs, CI)."""
from __future__ import annotations

import sys
from typing import Callable


class Progress:
    def __init__(self, total: int, start: int = 0, say: Callable[[str], None] = print, live: bool | None = None):
        self.total, self.say = total, say
        self.live = sys.stdout.isatty() if live is None else live
        self._bar = None
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

            self._bar = Bar(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                            TimeRemainingColumn(), transient=False)
            self._task = self._bar.add_task("train", total=total, completed=start, info="")
            self._bar.start()

    def update(self, step: int, metrics: dict[str, float], eta_s: float) -> None:
        """Called at each logged step."""
        info = (f"loss {metrics['train/loss']:.4f}  acc {metrics['train/accuracy']:.3f}  "
                f"{metrics['perf/samples_per_s']:.0f} samples/s")
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
        else:
            self.say(f"step {step}/{self.total}  {info}  eta {eta_s:.0f} s")

    def note(self, line: str) -> None:
        """A line that must show above the bar (recoveries, warnings)."""
        (self._bar.console.print if self._bar is not None else self.say)(line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
