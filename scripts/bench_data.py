"""Does reading keep ahead of training? Loader throughput against the SHD-scale train step.

    python scripts/bench_data.py                  # 1024 SHD-layout samples, 512 N-MNIST recordings
    python scripts/bench_data.py --samples 2048 --events 8000

Writes SHD-layout HDF5 files (``--events`` spikes per sample over 1 s,
uniform over the 700 channels: the published set averages several thousand)
and N-MNIST recordings (about 4300 events each, like the real sample) in a
temporary directory, then times one worker's ``SampleLoader`` reading them
in shards of ``--shard`` samples: cold (read from the file and bin, the first
epoch) and cached (every later epoch), in samples/s. Beside it, the samples/s
that the SHD-scale train step (configs/bench_shd.yaml, dense input) consumes
on this machine, timed in the same run.
"""
from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from dataset_files import nmnist_bytes, write_nmnist, write_shd  # noqa: E402

from snndist.config import load_config  # noqa: E402
from snndist.data.datasets import make_dataset  # noqa: E402
from snndist.data.loader import SampleLoader  # noqa: E402
from snndist.data.order import plan_shards  # noqa: E402
from snndist.train.replica import Replica  # noqa: E402
from snndist.train.spec import network_spec  # noqa: E402
from snndist.train.step import Layout  # noqa: E402


def shd_files(root: Path, samples: int, events: int) -> None:
    rng = np.random.default_rng(0)
    times = [np.sort(rng.uniform(0, 1.0, events)) for _ in range(samples)]
    units = [rng.integers(0, 700, events) for _ in range(samples)]
    write_shd(root / "shd_train.h5", times, units, rng.integers(0, 20, samples))
    write_shd(root / "shd_test.h5", times[:8], units[:8], rng.integers(0, 20, 8))


def nmnist_files(root: Path, recordings: int) -> None:
    rng = np.random.default_rng(0)
    files = {}
    for i in range(recordings):
        n = 4300
        t = np.sort(rng.integers(0, 300_000, n))
        files[(i % 10, i)] = nmnist_bytes(list(zip(rng.integers(0, 34, n).tolist(), rng.integers(0, 34, n).tolist(),
                                                   rng.integers(0, 2, n).tolist(), t.tolist())))
    write_nmnist(root, "train", files)


def loader_rates(cfg, shard: int) -> tuple[float, float]:
    """(cold, cached) samples/s of one pass over the training split, ``shard`` samples a call."""
    dataset = make_dataset(cfg.data, "train")
    loader = SampleLoader(dataset, cfg.data, network_spec(cfg).layers[0], say=lambda _: None)
    rates = []
    for _ in range(2):
        began = time.perf_counter()
        for start in range(0, len(dataset), shard):
            loader.load(np.arange(start, min(start + shard, len(dataset))))
        rates.append(len(dataset) / (time.perf_counter() - began))
    return rates[0], rates[1]


def step_rate(rounds: int = 5) -> float:
    """Samples/s the SHD-scale train step (batch 256, dense) consumes, median of ``rounds``."""
    cfg = load_config("configs/bench_shd.yaml", ["data.encoding=dense"])
    replica = Replica(cfg, Layout.over(jax.local_devices()[:1]))
    shard = plan_shards(np.arange(cfg.train.global_batch), 1, 1)[0]
    jax.block_until_ready(replica.train_step(shard)["train/loss"])
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        jax.block_until_ready(replica.train_step(shard)["train/loss"])
        times.append(time.perf_counter() - began)
    return cfg.train.global_batch / statistics.median(times)


def gzipped_copy(source: Path, target: Path) -> None:
    """``target`` holding ``source``'s train file gzipped, as SHD is published, and its test file."""
    target.mkdir()
    with open(source / "shd_train.h5", "rb") as src, gzip.open(target / "shd_train.h5.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    shutil.copy(source / "shd_test.h5", target / "shd_test.h5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1024, help="SHD-layout samples")
    parser.add_argument("--events", type=int, default=8000, help="spikes per SHD-layout sample")
    parser.add_argument("--recordings", type=int, default=512, help="N-MNIST recordings")
    parser.add_argument("--shard", type=int, default=128, help="samples per load call (one worker's shard)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["SNNDIST_LOCAL_DIR"] = str(root / "local")  # where the .gz is unpacked
        shd_files(root / "shd", args.samples, args.events)
        gzipped_copy(root / "shd", root / "gz")
        nmnist_files(root / "nmnist", args.recordings)
        # 100 bins of 10 ms, the step's shape; the model (unused here) takes the slower synapses that dt needs
        shd = ["data.kind=shd", "data.dt_ms=10", "data.timesteps=100", "model.layers[0].tau_syn_ms=20",
               "model.readout.tau_ms=20"]
        readers = {
            "SHD layout, .h5": load_config("configs/bench_shd.yaml", [*shd, f"data.path={root / 'shd'}"]),
            "SHD layout, .h5.gz (unpacked at open)": load_config("configs/bench_shd.yaml",
                                                               [*shd, f"data.path={root / 'gz'}"]),
            "N-MNIST .bin files": load_config(None, ["data.kind=nmnist", f"data.path={root / 'nmnist'}",
                                                     "data.num_inputs=2312", "data.num_classes=10",
                                                     "data.timesteps=100", "data.dt_ms=3"]),
        }
        rows = [(name, *loader_rates(cfg, args.shard)) for name, cfg in readers.items()]
    consumed = step_rate()
    print(f"{args.samples} SHD-layout samples x {args.events} events, {args.recordings} N-MNIST recordings, "
          f"shards of {args.shard}, {os.cpu_count()} CPU cores")
    print(f"{'reader (one worker)':38} {'cold samples/s':>15} {'cached samples/s':>17} {'cold / step':>12} "
          f"{'cached / step':>14}")
    for name, cold, cached in rows:
        print(f"{name:38} {cold:15.0f} {cached:17.0f} {cold / consumed:11.1f}x {cached / consumed:13.1f}x")
    print(f"SHD-scale train step (configs/bench_shd.yaml, batch 256, dense) consumes {consumed:.0f} samples/s")


if __name__ == "__main__":
    main()
