"""The Spiking Heidelberg Digits (SHD) and Spiking Speech Commands (SSC), as published.

``data.path`` holds ``shd_train.h5`` and ``shd_test.h5`` (SSC: ``ssc_train.h5``,
``ssc_valid.h5``, ``ssc_test.h5``), each as downloaded (``.h5.gz``) or
unpacked. Each file holds ``spikes/times`` (per sample, event times in
seconds), ``spikes/units`` (per sample, the channel 0..699 of each event)
and ``labels``. A gzipped file is unpacked once into
``$SNNDIST_LOCAL_DIR/data`` (h5py reads only plain files); then each worker
opens the file itself and reads the rows of its own samples.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from snndist.config import local_root
from snndist.data.binning import Events, check_events
from snndist.errors import DataError

CHANNELS = 700
SPLITS = {"shd": ("train", "test"), "ssc": ("train", "valid", "test")}
KEYS = ("spikes/times", "spikes/units", "labels")


class HeidelbergFile:
    """One split's file: an ``EventSource`` of its samples, channels pooled by ``pool``."""

    def __init__(self, directory: str, kind: str, split: str, pool: int):
        import h5py

        if split not in SPLITS[kind]:
            raise DataError(f"data.kind={kind} has the splits {', '.join(SPLITS[kind])}, not {split!r}")
        path = find_file(Path(directory), f"{kind}_{split}.h5")
        self.name = path.name
        try:
            self._file = h5py.File(unpacked(path), "r")
        except OSError as err:
            raise DataError(f"{path}: not an HDF5 file ({err})") from None
        for key in KEYS:
            if key not in self._file:
                raise DataError(f"{path}: no '{key}' in the file (an {kind.upper()} file holds "
                                f"{', '.join(KEYS)})")
        self._times, self._units = self._file["spikes/times"], self._file["spikes/units"]
        self.labels = np.asarray(self._file["labels"], np.int64)
        if not len(self._times) == len(self._units) == len(self.labels):
            raise DataError(f"{path}: {len(self._times)} rows of spikes/times, {len(self._units)} of spikes/units "
                            f"and {len(self.labels)} labels; they must match")
        self.pool = pool
        self.num_channels = math.ceil(CHANNELS / pool)

    def events(self, index: int) -> Events:
        times = np.asarray(self._times[index], np.float64) * 1000.0  # seconds -> ms
        units = np.asarray(self._units[index], np.int64)
        check_events(times, units, CHANNELS, f"{self.name} sample {index}")
        return Events(times, units // self.pool)


def find_file(directory: Path, name: str) -> Path:
    """``directory/name``, or its gzipped ``name.gz``; DataError naming what is missing."""
    if not directory.is_dir():
        raise DataError(f"data.path={directory}: no such directory")
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{directory / name}: no such file (nor {name}.gz)")


def unpacked(path: Path) -> Path:
    """``path`` itself, or for a ``.gz`` file its unpacked copy under ``$SNNDIST_LOCAL_DIR/data``, made once.

    The copy's name carries the source's path, size and time, so a changed source is unpacked again;
    it is written aside and renamed into place, so readers never see half a file.
    """
    if path.suffix != ".gz":
        return path
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    root = local_root() / "data"
    target = root / f"{path.stem}-{key}"
    if target.is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=root, prefix=f".{path.stem}-", delete=False) as out:
        try:
            with gzip.open(path, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
        except (OSError, EOFError) as err:
            os.unlink(out.name)
            raise DataError(f"{path}: cannot unpack ({err})") from None
    os.replace(out.name, target)
    return target
