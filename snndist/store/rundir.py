"""The run directory: ``config.yaml``, ``metrics.jsonl``, ``summary.json``,
``checkpoints/``, ... on a local or shared filesystem, or at ``gs://bucket/path``.

Paths are ``etils.epath`` paths, the ones Orbax writes through: one type for
both kinds, with ``gs://`` going to Cloud Storage through gcsfs.
"""
from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path

from etils import epath

from snndist.config import local_root
from snndist.errors import ConfigError, one_line

REMOTE_PREFIXES = ("gs://",)


def is_remote(path: str | os.PathLike) -> bool:
    return str(path).startswith(REMOTE_PREFIXES)


def _bucket(path: str | os.PathLike) -> str:
    return str(path).removeprefix("gs://").split("/", 1)[0]


def run_path(path: str | os.PathLike) -> epath.Path:
    """``path`` as a run directory path; refuses URLs other than gs://."""
    text = os.fspath(path)
    if "://" in text and not is_remote(text):
        raise ConfigError(f"{text}: a run directory is a filesystem path or gs://BUCKET/PATH")
    if is_remote(text) and not _bucket(text):
        raise ConfigError(f"{text}: no bucket name (expected gs://BUCKET/PATH)")
    return epath.Path(text)


def open_run_dir(path: str | os.PathLike) -> epath.Path:
    """``run_path(path)``; for gs://, first a check that the bucket answers, so that a typo or missing
    credentials give one line now, not gcsfs's retries' tracebacks at the first write."""
    run_dir = run_path(path)
    if not is_remote(run_dir):
        return run_dir
    bucket = f"gs://{_bucket(run_dir)}"
    try:
        found = _bucket_exists(bucket)
    except Exception as err:  # network, credentials: whatever the client raises
        raise ConfigError(f"{run_dir}: cannot reach Cloud Storage ({type(err).__name__}: "
                          f"{one_line(err, 200)})") from None
    if not found:
        raise ConfigError(f"{run_dir}: bucket {bucket} does not exist (or these credentials cannot see it)")
    return run_dir


@functools.cache  # once per process: a resume opens the run for its config, then to run it
def _bucket_exists(bucket: str) -> bool:
    gcsfs_log = logging.getLogger("gcsfs")
    level = gcsfs_log.level
    gcsfs_log.setLevel(logging.CRITICAL)
    try:
        return epath.Path(bucket).exists()
    finally:
        gcsfs_log.setLevel(level)


def local_dir_for(run_dir: epath.Path) -> Path:
    """A directory on this machine for what must be local (W&B's files): the run directory
    itself, or for gs:// a mirror under ``$SNNDIST_LOCAL_DIR`` (default ``~/.cache/snndist``)."""
    if not is_remote(run_dir):
        return Path(run_dir)
    return local_root() / str(run_dir).replace("://", "/", 1)


def default_run_dir(config_path: str | None) -> epath.Path:
    stem = Path(config_path).stem if config_path else "run"
    return epath.Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_run_dir_free(path: epath.Path) -> epath.Path:
    """Refuse a directory that holds a run: it is never reused or overwritten."""
    if (path / "config.yaml").exists() or (path / "checkpoints").exists():
        raise ConfigError(f"{path}: run directory already holds a run; "
                          f"pass --resume {path} to continue it, or choose another --run-dir")
    return path
