"""Reading W&B offline runs back with W&B's own reader, ``wandb leet inspect``, for the tests.

``wandb leet inspect --json RUN.wandb`` prints one JSON object per record of
a run's transaction log (the file ``wandb sync`` uploads); with ``--summary``
one object: run id, last step, summary, config, state.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _leet(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}  # a local read needs no key
    done = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", *args], capture_output=True, text=True,
                          timeout=60, check=True, env={**env, "WANDB_SILENT": "true"})
    return done.stdout


def inspect_records(run_file: Path) -> list[dict]:
    """Every record of a ``.wandb`` file."""
    return [json.loads(line) for line in _leet("--json", str(run_file)).splitlines() if line.strip()]


def inspect_summary(run_file: Path) -> dict:
    """W&B's summary view of a ``.wandb`` file: ``run_id``, ``step`` (the last one), ``summary``, ``state``..."""
    return json.loads(_leet("--summary", "--json", str(run_file)))


def history(records: list[dict]) -> list[tuple[int, dict]]:
    return [(r["history"]["step"]["num"], r["history"]["item"]) for r in records if r["type"] == "history"]


def config_of(records: list[dict]) -> dict:
    """The run's config: the run record's, updated by later config records."""
    config = dict(next(r["run"] for r in records if r["type"] == "run")["config"]["update"])
    for r in records:
        if r["type"] == "config":
            config.update(r["config"].get("update", {}))
    return config


def run_files(run_dir: Path, run_id: str) -> list[Path]:
    """The transaction logs W&B keeps for a run id, oldest first (one per session)."""
    files = {p.resolve() for p in (run_dir / "wandb").glob(f"*run-*{run_id}*/run-{run_id}.wandb")}
    return sorted(files, key=lambda p: next(r["run"]["start_time"] for r in inspect_records(p) if r["type"] == "run"))
