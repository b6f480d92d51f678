"""The run directory: ``config.yaml``, ``metrics.jsonl``, ``summary.json``, ..."""
from __future__ import annotations

import time
from pathlib import Path

from snndist.errors import ConfigError


def default_run_dir(config_path: str | None) -> Path:
    stem = Path(config_path).stem if config_path else "run"
    return Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_run_dir_free(path: Path) -> Path:
    """Refuse a directory that holds a run: it is never reused or overwritten."""
    path = Path(path)
    if (path / "config.yaml").exists() or (path / "checkpoints").exists():
        raise ConfigError(f"{path}: run directory already holds a run; "
                          f"pass --resume {path} to continue it, or choose another --run-dir")
    return path
