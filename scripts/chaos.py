"""A chaos soak: a 2-worker training on the embedded Ray, faults injected from a seeded schedule.

    python scripts/chaos.py                       # 3000 tutorial steps, 12 faults
    python scripts/chaos.py --steps 2000 --faults 10 --seed 1

Faults, at random steps (the schedule is a function of --seed): a worker
SIGKILLed (the coordinator must recover); the coordinator SIGTERMed (it must
checkpoint and exit 75), then ``--resume``; the coordinator SIGKILLed, then
``--resume`` (the dead run's lease is taken over); the newest checkpoint
truncated while the run is stopped (the resume must fall back to an older
one); a second coordinator started on the same run directory (it must be
refused). At the end it checks that the final parameters are bitwise those of
an uninterrupted run (coordinator gradient sync), that metrics.jsonl has each
logged step exactly once, and that every fault was refused or recovered, and
prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import psutil

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "snndist"]
KINDS = ("kill worker", "SIGTERM coordinator", "SIGKILL coordinator", "truncate newest checkpoint",
         "second coordinator")


def overrides(steps: int) -> list[str]:
    sets = [f"train.steps={steps}", "train.workers=2", "train.grad_sync=coordinator", "checkpoint.every_steps=100",
            "checkpoint.keep=5", "logging.log_every=50", "logging.wandb.mode=disabled", "train.max_failures=100"]
    return [a for s in sets for a in ("--set", s)]


def start(run: Path, steps: int, resume: bool) -> subprocess.Popen:
    args = ["--resume", str(run)] if resume else ["--config", "configs/tutorial.yaml", "--run-dir", str(run),
                                                    *overrides(steps)]
    return subprocess.Popen([*CLI, "train", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, bufsize=1)


def params(run: Path) -> dict:
    manager = ocp.CheckpointManager((run / "checkpoints").absolute(), item_names=("params",))
    return manager.restore(manager.latest_step(),
                           args=ocp.args.Composite(params=ocp.args.StandardRestore()))["params"]


def truncate_newest(run: Path) -> int:
    steps = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    files = sorted((run / "checkpoints" / str(steps[-1]) / "params").rglob("ocdbt.process_0/d/*"),
                   key=lambda p: p.stat().st_size)
    files[-1].write_bytes(files[-1].read_bytes()[: files[-1].stat().st_size // 2])
    return steps[-1]


def schedule(seed: int, steps: int, faults: int) -> list[tuple[int, str]]:
    """``faults`` faults at distinct steps, every kind at least twice where there is room."""
    rng = random.Random(seed)
    kinds = [KINDS[i % len(KINDS)] for i in range(faults)]
    rng.shuffle(kinds)
    at = sorted(rng.sample(range(150, steps - 100, 50), faults))
    return list(zip(at, kinds))


def soak(run: Path, steps: int, plan: list[tuple[int, str]]) -> tuple[list[dict], float]:
    """Run with the faults of ``plan``; the rows of the table and the wall time."""
    began = time.monotonic()
    rows, pending = [], list(plan)
    proc = start(run, steps, resume=False)
    while True:
        step = 0
        for line in proc.stdout:
            match = re.match(r"step (\d+)/", line)
            if match:
                step = int(match.group(1))
            if "recovered:" in line and rows and rows[-1]["kind"] == "kill worker" and rows[-1]["outcome"] is None:
                rows[-1]["outcome"] = "recovered"
                rows[-1]["replayed"] = int(re.search(r"replaying (\d+) step", line).group(1))
            if not pending or step < pending[0][0]:
                continue
            at, kind = pending.pop(0)
            row = {"step": step, "kind": kind, "outcome": None, "replayed": 0}
            rows.append(row)
            if kind == "kill worker":
                workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                           if p.name().startswith("ray::Worker")]
                os.kill(workers[0].pid, signal.SIGKILL)
            elif kind == "second coordinator":
                second = subprocess.run([*CLI, "train", "--resume", str(run)], cwd=REPO, capture_output=True,
                                        text=True, timeout=300)
                refused = second.returncode == 2 and "is in use by snndist" in second.stderr
                row["outcome"] = "refused" if refused else f"NOT refused (exit {second.returncode})"
            else:  # stop the coordinator; the truncation happens while it is stopped
                os.kill(proc.pid, signal.SIGTERM if kind != "SIGKILL coordinator" else signal.SIGKILL)
                break
        code = proc.wait()
        stderr = proc.stderr.read()
        if not rows or rows[-1]["kind"] in ("kill worker", "second coordinator") or rows[-1]["outcome"]:
            if code != 0:
                raise SystemExit(f"the run failed (exit {code}): {stderr[-2000:]}")
            return rows, time.monotonic() - began
        row = rows[-1]
        expected = {"SIGTERM coordinator": 75, "truncate newest checkpoint": 75, "SIGKILL coordinator": -9}[row["kind"]]
        if code != expected:
            raise SystemExit(f"{row['kind']}: exit {code}, expected {expected}: {stderr[-2000:]}")
        stopped = re.search(r"at step (\d+); checkpoint committed", stderr)  # SIGTERM: after the step in flight
        if stopped:
            row["step"] = int(stopped.group(1))
        truncated = truncate_newest(run) if row["kind"] == "truncate newest checkpoint" else None
        proc = start(run, steps, resume=True)
        resumed_at = None
        for line in proc.stdout:
            match = re.match(r"resumed at step (\d+)", line)
            if match:
                resumed_at = int(match.group(1))
                break
            if truncated is not None and f"checkpoints/{truncated} is unreadable" in line:
                row["fell_back_from"] = truncated
        if resumed_at is None:
            raise SystemExit(f"the resume after {row['kind']} did not resume: {proc.stderr.read()[-2000:]}")
        if truncated is not None and row.get("fell_back_from") != truncated:
            raise SystemExit(f"the resume did not fall back from the truncated checkpoint {truncated}")
        row["replayed"] = row["step"] - resumed_at
        row["outcome"] = "recovered"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--faults", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    plan = schedule(args.seed, args.steps, args.faults)
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "uninterrupted"
        began = time.monotonic()
        whole = start(reference, args.steps, resume=False)
        whole.communicate()
        assert whole.returncode == 0, "the uninterrupted run failed"
        clean_s = time.monotonic() - began
        run = Path(tmp) / "chaos"
        rows, chaos_s = soak(run, args.steps, plan)
        a, b = params(reference), params(run)
        bitwise = all(np.array_equal(a[k][n], b[k][n]) for k in a for n in a[k])
        logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
                  if "train/loss" in line]
        once = logged == list(range(50, args.steps + 1, 50))
        if not once:
            print(f"metrics.jsonl's train steps: {logged}")
    print(f"chaos soak: tutorial config, {args.steps} steps, 2 Ray workers (coordinator sync), seed {args.seed}")
    print(f"{'step':>6}  {'fault':28} {'outcome':12} {'steps replayed':>14}")
    for r in rows:
        print(f"{r['step']:>6}  {r['kind']:28} {r['outcome']:12} {r['replayed']:>14}")
    outcomes = [r["outcome"] for r in rows]
    print(f"faults injected {len(rows)}, recovered {outcomes.count('recovered')}, refused {outcomes.count('refused')}, "
          f"steps replayed {sum(r['replayed'] for r in rows)}, wall time {chaos_s:.0f} s against {clean_s:.0f} s "
          f"uninterrupted ({chaos_s - clean_s:+.0f} s lost)")
    print(f"final parameters bitwise equal to the uninterrupted run: {bitwise}; "
          f"metrics.jsonl has each logged step once: {once}")
    if not (bitwise and once and all(o in ("recovered", "refused") for o in outcomes)):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
