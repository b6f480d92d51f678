"""What a sweep found: its trials' state (``trials.json``, written as the sweep runs), the table sorted by
the metric, the best trial's config as ``best.yaml``, and ``plots/sweep.png``. No Ray here: ``--status``
reads a sweep directory while the sweep runs, or after it ended."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from snndist.sweep.space import Sweep

STATE = "trials.json"
BEST = "best.yaml"
PLOT = Path("plots") / "sweep.png"


@dataclass
class TrialRow:
    id: str
    status: str  # pending | running | done | stopped early | error | unfinished (the sweep stopped first)
    params: dict  # {config field: value}
    step: int | None = None  # the last step it reported
    steps: int | None = None  # its train.steps
    value: float | None = None  # the metric at ``step``
    error: str | None = None
    run_dir: str | None = None
    metrics: dict = field(default_factory=dict)  # everything it last reported


def write_state(sweep_dir: Path, rows: list[TrialRow], samples: int) -> None:
    path = sweep_dir / STATE
    text = json.dumps({"samples": samples, "trials": [asdict(r) for r in rows]}, indent=1, default=_plain)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # whole or not at all: --status may read it meanwhile


def read_state(sweep_dir: Path) -> tuple[list[TrialRow], int]:
    path = sweep_dir / STATE
    if not path.is_file():
        return [], 0
    state = json.loads(path.read_text())
    return [TrialRow(**row) for row in state["trials"]], state["samples"]


def _plain(value):
    """What JSON lacks a form for: NumPy scalars (Tune's results may hold them) as numbers, else text."""
    return value.item() if hasattr(value, "item") else str(value)


def ranked(rows: list[TrialRow], mode: str) -> list[TrialRow]:
    """Best first by the metric; trials without a value last, in id order."""
    sign = -1.0 if mode == "max" else 1.0
    return sorted(rows, key=lambda r: (r.value is None or math.isnan(r.value),
                                       sign * r.value if r.value is not None else 0.0, r.id))


def table(rows: list[TrialRow], sweep: Sweep, samples: int) -> str:
    """The trials, best first: id, status, the step each reached, the metric, each swept field."""
    fields = list(sweep.space)
    header = ["TRIAL", "STATUS", "STEP", sweep.metric, *fields]
    lines = [header]
    for r in ranked(rows, sweep.mode):
        step = "-" if r.step is None else f"{r.step}/{r.steps}"
        value = "-" if r.value is None else f"{r.value:.4g}"
        lines.append([r.id, r.status, step, value, *(_short(r.params.get(f)) for f in fields)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    text = [" ".join([*(c.ljust(w) for c, w in zip(line, widths)), line[-1]]).rstrip() for line in lines]
    text += [f"{r.id} failed: {r.error}" for r in rows if r.status == "error"]
    left = samples - len(rows)
    return "\n".join(text) + (f"\n{left} more trial(s) not started yet" if left > 0 else "")


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def best(rows: list[TrialRow], mode: str) -> TrialRow | None:
    """The best of the trials that trained all their steps (one stopped early never saw the rest)."""
    done = [r for r in rows if r.status == "done" and r.value is not None and not math.isnan(r.value)]
    return ranked(done, mode)[0] if done else None


def write_best(sweep_dir: Path, row: TrialRow, base_wandb: dict) -> Path:
    """The best trial's own config.yaml, with the base config's W&B group and name (not the sweep's):
    ``snndist train --config best.yaml`` trains it again, with the same seed the same numbers."""
    cfg = yaml.safe_load((Path(row.run_dir) / "config.yaml").read_text())
    cfg["logging"]["wandb"]["group"] = base_wandb.get("group")
    cfg["logging"]["wandb"]["name"] = base_wandb.get("name")
    path = sweep_dir / BEST
    params = ", ".join(f"{k}={_short(v)}" for k, v in row.params.items())
    path.write_text(f"# the best trial of the sweep in {sweep_dir}: {row.id}, {row.value:.6g} at step {row.step}\n"
                    f"# {params}\n" + yaml.safe_dump(cfg, sort_keys=False))
    return path


def plot(sweep_dir: Path, rows: list[TrialRow], sweep: Sweep) -> Path | None:
    """The metric against each swept field, a panel each; trials stopped early drawn apart from finished ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.value is not None]
    if not shown:
        return None
    fields = list(sweep.space)
    fig, axes = plt.subplots(1, len(fields), figsize=(4 * len(fields), 3.5), squeeze=False, sharey=True)
    styles = {"done": ("o", "tab:blue"), "stopped early": ("x", "tab:gray")}
    for ax, name in zip(axes[0], fields):
        kind, _ = sweep.space[name]
        for status, (marker, color) in styles.items():
            points = [(r.params.get(name), r.value) for r in shown if r.status == status]
            if points:
                xs, ys = zip(*points)
                ax.scatter([_axis_value(x) for x in xs], ys, marker=marker, color=color, label=status)
        other = [(r.params.get(name), r.value) for r in shown if r.status not in styles]
        if other:
            xs, ys = zip(*other)
            ax.scatter([_axis_value(x) for x in xs], ys, marker=".", color="tab:orange", label="other")
        if kind == "loguniform":
            ax.set_xscale("log")
        ax.set_xlabel(name)
    axes[0][0].set_ylabel(sweep.metric)
    axes[0][0].legend(fontsize="small")
    fig.suptitle(f"{sweep_dir.name}: {sweep.metric} ({sweep.mode}) at each trial's last step")
    fig.tight_layout()
    path = sweep_dir / PLOT
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _axis_value(value):
    return value if isinstance(value, (int, float)) else str(value)
