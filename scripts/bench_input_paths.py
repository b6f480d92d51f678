"""Event lists against the dense raster as the network's input: the crossover density, and what ``auto`` picks.

    python scripts/bench_input_paths.py                                  # the default grid, 3 rounds
    python scripts/bench_input_paths.py --shapes shd --densities 0.005,0.01,0.02
    python scripts/bench_input_paths.py --write BENCHMARKS.md            # also record the table there

For each shape and input density, snndist's train step (forward, BPTT,
Adam; its batch on the device, as in ``scripts/bench_peers.py``) runs with
the input as padded event lists and as the dense raster, the two taking
turns in rounds. The table gives both medians, which is faster, and which
one ``data.encoding: auto`` would pick for that shape and density
(``snndist.data.loader.choose_encoding``): the rule is right where it picks
the faster one. Shapes:

    tutorial      100 inputs -> 4 LIF -> 2 classes, T=200 (configs/tutorial.yaml)
    shd           700 inputs -> 256 recurrent LIF -> 20 classes, T=100 (configs/bench_shd.yaml)
    shd-h32       the same with 32 neurons
    tutorial-h64  the tutorial with 64 neurons
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
from pathlib import Path

import jax

from bench_peers import (Problem, cpu_model, input_density, load_problem, run_rounds, say, snndist_contender,
                         write_section)
from snndist.data.datasets import make_dataset
from snndist.data.loader import choose_encoding
from snndist.huge_pages import restart_with_huge_pages

SHAPES = {"tutorial": ("tutorial", ()), "shd": ("shd", ()),
          "shd-h32": ("shd", ("model.layers.0.size=32",)), "tutorial-h64": ("tutorial", ("model.layers.0.size=64",))}
DENSITIES = "0.005,0.01,0.02,0.05,0.1,0.2"


def problem_at(shape: str, density: float) -> Problem:
    name, overrides = SHAPES[shape]
    problem = load_problem(name, overrides)
    rate_hz = density * 1000.0 / problem.cfg.data.dt_ms
    return load_problem(name, overrides + (f"data.rate_hz={rate_hz:g}",))


def auto_pick(problem: Problem) -> str:
    """What ``data.encoding: auto`` picks for this problem's data and network."""
    cfg = problem.cfg
    return choose_encoding(cfg.data, make_dataset(cfg.data, "train", cfg.train.seed), problem.spec.layers[0])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="tutorial,tutorial-h64,shd-h32,shd", help="comma-separated: " + ", ".join(SHAPES))
    parser.add_argument("--densities", default=DENSITIES, help="input densities (chance of a spike per input and step)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per input path per round")
    parser.add_argument("--block-s", type=float, default=10.0, help="a block stops after this many seconds (but 3 steps)")
    parser.add_argument("--write", metavar="FILE", help="also write the table between markers in FILE")
    args = parser.parse_args()
    restart_with_huge_pages()  # as the snndist command runs
    if unknown := set(args.shapes.split(",")) - set(SHAPES):
        parser.error(f"unknown shape(s) {', '.join(sorted(unknown))}; known: {', '.join(SHAPES)}")

    rows = ["| shape | density | events ms | dense ms | events / dense | faster | auto picks | |",
            "|---|---:|---:|---:|---:|---|---|---|"]
    wrong = 0
    for shape in args.shapes.split(","):
        for density in map(float, args.densities.split(",")):
            problem = problem_at(shape, density)
            say(f"{shape} at density {input_density(problem.cfg):g}: building and compiling")
            contenders = [snndist_contender(problem, encoding, "auto") for encoding in ("events", "dense")]
            timing = run_rounds(contenders, args.rounds, args.steps, args.block_s)
            events, dense = (statistics.median(t for block in timing.ms[c.label] for t in block) for c in contenders)
            faster, picked = ("events" if events < dense else "dense"), auto_pick(problem)
            wrong += picked != faster
            rows.append(f"| {shape} | {density:g} | {events:.2f} | {dense:.2f} | {events / dense:.2f} | {faster} | "
                        f"{picked} | {'right' if picked == faster else '**wrong**'} |")
            print(rows[-1], flush=True)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n".join([
        "## Input paths: `python scripts/bench_input_paths.py`", "",
        f"- date: {now}; machine: {cpu_model()}, {os.cpu_count()} cores, {jax.devices()[0].platform}",
        f"- command: `python scripts/bench_input_paths.py --shapes {args.shapes} --densities {args.densities} "
        f"--rounds {args.rounds} --steps {args.steps} --block-s {args.block_s:g}`",
        f"- ms/step: median over {args.rounds} interleaved rounds of up to {args.steps} steps per input path; "
        f"`auto` picks the faster path in {len(rows) - 2 - wrong} of {len(rows) - 2} cases", "", *rows])
    print("\n" + body)
    if args.write:
        write_section(Path(args.write), body, "bench_input_paths")


if __name__ == "__main__":
    main()
