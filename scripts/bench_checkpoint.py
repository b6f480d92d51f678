"""What a checkpoint costs the training loop: blocking time of an async save, and restore time.

    python scripts/bench_checkpoint.py                     # SHD-scale config, 5 saves
    python scripts/bench_checkpoint.py --config configs/tutorial.yaml

The blocking time is what ``loop.fit`` waits for: reading the state off the
device plus handing it to Orbax's writer thread; the write itself overlaps
the following steps.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from snndist.config import load_config
from snndist.data.order import batch_indices
from snndist.run.loop import restore_newest
from snndist.store.checkpoint import Checkpointer
from snndist.train.local import LocalRunner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/bench_shd.yaml")
    parser.add_argument("--saves", type=int, default=5)
    parser.add_argument("--steps-between", type=int, default=3)
    args = parser.parse_args()
    cfg = load_config(args.config)
    runner = LocalRunner(cfg, devices=1)
    t = cfg.train

    def step(i):
        metrics = runner.step(batch_indices(i, t.global_batch, runner.num_samples, t.seed))
        float(np.asarray(metrics["train/loss"]))

    with tempfile.TemporaryDirectory() as tmp:
        checkpointer = Checkpointer(Path(tmp), cfg.checkpoint, say=print)
        step(0)
        step_times, blocks, i = [], [], 1
        for save in range(args.saves):
            for _ in range(args.steps_between):
                began = time.perf_counter()
                step(i)
                step_times.append(time.perf_counter() - began)
                i += 1
            began = time.perf_counter()
            state = runner.get_state()
            checkpointer.save(i, state, {"step": i, "skipped": state["skipped"]})
            blocks.append(time.perf_counter() - began)
        checkpointer.wait()
        size = sum(f.stat().st_size for f in Path(tmp, "checkpoints").rglob("*") if f.is_file()) / len(
            checkpointer.steps())
        restores = []
        for _ in range(3):
            began = time.perf_counter()
            restore_newest(checkpointer, runner)
            restores.append(time.perf_counter() - began)
        checkpointer.close()
    step_ms, block_ms = 1000 * statistics.median(step_times), 1000 * statistics.median(blocks)
    print(f"{args.config}: checkpoint {size / 1e6:.2f} MB")
    print(f"{'step ms':>8} {'save blocks ms':>15} {'block / step':>13} {'restore ms':>11}")
    print(f"{step_ms:8.1f} {block_ms:15.1f} {block_ms / step_ms:12.1%} {1000 * statistics.median(restores):11.1f}")


if __name__ == "__main__":
    main()
