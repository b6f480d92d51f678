"""The seed's task trained start to finish: the seed's own script against snndist, whole processes, interleaved.

    python scripts/bench_end_to_end.py                          # 3 rounds
    python scripts/bench_end_to_end.py --rounds 1 --write BENCHMARKS.md
    python scripts/bench_end_to_end.py --seed-script PATH       # the seed tutorial's script elsewhere

Each round runs, one after another, in fresh processes, 3000 Adam steps of
the seed's network and task (100 inputs, 4 LIF neurons, 2 classes, T=200,
batch 256):

    seed      python SEED_SCRIPT --steps 3000     (the seed library: the bench extra)
    --local   snndist train --config configs/tutorial.yaml --local
    ray       snndist train --config configs/tutorial.yaml   (a Ray instance it starts and stops)

Wall time is from the process's start to its exit: imports, compiling,
training, and for snndist the final evaluation, checkpoint and W&B (offline)
too. snndist's own time in its training loop (``summary.json``'s
``wall_time_s``) is shown beside it; the rest is start-up and shut-down.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_peers import cpu_model, write_section

ROOT = Path(__file__).resolve().parent.parent
SEED_SCRIPT = ROOT.parent / "shared" / "reference" / "seed_tutorial.py"
STEPS = 3000
SEED, LOCAL = "seed script (brainstate)", "snndist --local"


def contenders(seed_script: Path | None, run_root: Path) -> dict[str, Callable[[], tuple[float, float | None]]]:
    """Label -> a function that runs it once and returns ``(wall s, loop s or None)``."""
    def snndist(*flags: str):
        def once():
            run = run_root / f"run-{time.monotonic_ns()}"
            wall = _timed([sys.executable, "-m", "snndist", "train", "--config", "configs/tutorial.yaml", *flags,
                           "--run-dir", str(run)])
            return wall, json.loads((run / "summary.json").read_text())["wall_time_s"]
        return once

    runs = {}
    if seed_script is not None:
        runs[SEED] = lambda: (_timed([sys.executable, str(seed_script), "--steps", str(STEPS)]), None)
    runs[LOCAL] = snndist("--local")
    runs["snndist on Ray (embedded)"] = snndist()
    return runs


def _timed(command: list[str]) -> float:
    began = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "WANDB_MODE": "offline"})
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return time.perf_counter() - began


def table(times: dict[str, list[tuple[float, float | None]]]) -> str:
    median = {label: statistics.median(wall for wall, _ in runs) for label, runs in times.items()}
    seed, local = median.get(SEED), median[LOCAL]
    lines = ["| process | wall s (median) | rounds | training loop s | seed script / this | this / --local |",
             "|---|---:|---|---:|---:|---:|"]
    for label, runs in times.items():
        loops = [loop for _, loop in runs if loop is not None]
        cells = [label, f"{median[label]:.1f}", " / ".join(f"{wall:.1f}" for wall, _ in runs),
                 f"{statistics.median(loops):.1f}" if loops else "",
                 f"{seed / median[label]:.2f}x" if seed else "", f"{median[label] / local:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--seed-script", type=Path, default=SEED_SCRIPT,
                        help="the seed tutorial's script (default: %(default)s)")
    parser.add_argument("--write", metavar="FILE", help="also write the table between markers in FILE")
    args = parser.parse_args()
    seed_script = args.seed_script if args.seed_script.exists() else None
    if seed_script is None:
        print(f"note: {args.seed_script} not found: the seed script's row is left out")
    with tempfile.TemporaryDirectory() as tmp:
        runs = contenders(seed_script, Path(tmp))
        times: dict[str, list] = {label: [] for label in runs}
        for round_ in range(1, args.rounds + 1):
            for label, once in runs.items():
                times[label].append(once())
                print(f"round {round_}/{args.rounds}: {label} {times[label][-1][0]:.1f} s", flush=True)
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    body = "\n".join([
        "## End to end: `python scripts/bench_end_to_end.py`", "",
        f"- date: {now}; machine: {cpu_model()}, {os.cpu_count()} cores; python {sys.version.split()[0]}",
        f"- {STEPS} steps of the seed's task per process, {args.rounds} interleaved rounds; wall time from the "
        "process's start to its exit (W&B offline for snndist)", "", table(times)])
    print("\n" + body)
    if args.write:
        write_section(Path(args.write), body, "bench_end_to_end")


if __name__ == "__main__":
    main()
