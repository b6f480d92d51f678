"""Small files in the published dataset formats, written by the tests (nothing is downloaded)."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import h5py
import numpy as np


def write_shd(path: Path, times_s: list, units: list, labels, gz: bool = False, drop: str | None = None) -> Path:
    """An SHD/SSC-layout HDF5 file: ragged spikes/times (float16 seconds, as published) and
    spikes/units (uint16), labels; ``drop`` leaves one of them out; ``gz`` gzips it as published."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        spikes = f.create_group("spikes")
        if drop != "spikes/times":
            d = spikes.create_dataset("times", (len(times_s),), dtype=h5py.vlen_dtype(np.float16))
            for i, t in enumerate(times_s):
                d[i] = np.asarray(t, np.float16)
        if drop != "spikes/units":
            d = spikes.create_dataset("units", (len(units),), dtype=h5py.vlen_dtype(np.uint16))
            for i, u in enumerate(units):
                d[i] = np.asarray(u, np.uint16)
        if drop != "labels":
            f.create_dataset("labels", data=np.asarray(labels, np.uint16))
        f.create_group("extra").create_dataset("speaker", data=np.zeros(len(labels), np.uint16))
    if not gz:
        return path
    packed = path.with_name(path.name + ".gz")
    with open(path, "rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()
    return packed


def nmnist_bytes(events: list[tuple[int, int, int, int]]) -> bytes:
    """(x, y, polarity, t_us) events, 5 bytes each, byte by byte as the format says; y = 240 marks
    a timestamp overflow."""
    out = bytearray()
    for x, y, p, t in events:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


def write_nmnist(root: Path, split: str, recordings: dict[tuple[int, int], bytes]) -> None:
    """``root/Train|Test/<digit>/<id>.bin`` from {(digit, id): bytes}."""
    for (digit, ident), data in recordings.items():
        folder = root / {"train": "Train", "test": "Test"}[split] / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{ident:05d}.bin").write_bytes(data)


def write_event_file(path: Path, samples: list[tuple[list, list]], labels, polarity: list | None = None,
                     drop: str | None = None) -> Path:
    """A users' event file (npz or h5 by suffix): flat times (s), channels, offsets, y, optional polarity."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"times": np.concatenate([np.asarray(t, float) for t, _ in samples]),
              "channels": np.concatenate([np.asarray(c, int) for _, c in samples]),
              "offsets": np.concatenate([[0], np.cumsum([len(t) for t, _ in samples])]),
              "y": np.asarray(labels)}
    if polarity is not None:
        arrays["polarity"] = np.concatenate([np.asarray(p, int) for p in polarity])
    arrays.pop(drop, None)
    if path.suffix == ".npz":
        np.savez(path, **arrays)
    else:
        with h5py.File(path, "w") as f:
            for k, v in arrays.items():
                f.create_dataset(k, data=v)
    return path
