"""A sweep directory: the sweep file and base config it keeps, the trials' run directories and configs.
No Ray here: ``--status`` reads a sweep directory too."""
from __future__ import annotations

import shutil
from pathlib import Path

from snndist.config import Config, dump_yaml, load_config
from snndist.errors import ConfigError
from snndist.sweep.space import Sweep, override, read_sweep

SWEEP = "sweep.yaml"  # the sweep file as given, kept for --resume and --status
BASE = "base.yaml"  # the base config every trial starts from, before the sweep file's set:
TRIALS = "trials"  # the trials' run directories


def start(base: Config, sweep_file: str | Path, sweep_dir: Path) -> Sweep:
    """A new sweep directory holding the sweep file and the base config every trial starts from."""
    sweep = read_sweep(sweep_file, base)
    if sweep_dir.exists() and any(sweep_dir.iterdir()):
        raise ConfigError(f"--run-dir {sweep_dir}: exists and is not empty; continue a sweep with --resume")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sweep_file, sweep_dir / SWEEP)
    (sweep_dir / BASE).write_text(dump_yaml(base))
    return sweep


def open_sweep(sweep_dir: Path) -> tuple[Sweep, Config]:
    """A sweep directory's sweep and base config."""
    if not (sweep_dir / SWEEP).is_file() or not (sweep_dir / BASE).is_file():
        raise ConfigError(f"{sweep_dir}: not a sweep directory (no {SWEEP} and {BASE})")
    base = load_config(sweep_dir / BASE)
    return read_sweep(sweep_dir / SWEEP, base), base


def sweep_name(sweep: Sweep, sweep_dir: Path) -> str:
    """The W&B group of every trial: the sweep file's ``name``, else the sweep directory's."""
    return sweep.name or sweep_dir.name


def trial_dir(sweep_dir: str | Path, trial_id: str) -> Path:
    return Path(sweep_dir) / TRIALS / trial_id


def trial_config(sweep_dir: str | Path, sets: tuple[str, ...], params: dict, group: str, trial_id: str) -> Config:
    """The base config with the sweep's ``sets`` at the trial's point ``params`` ({field: value}), in W&B
    group ``group``."""
    fields = [override(key, value) for key, value in params.items()]
    return load_config(Path(sweep_dir) / BASE, [*sets, *fields, override("logging.wandb.group", group),
                                                 override("logging.wandb.name", trial_id)])
