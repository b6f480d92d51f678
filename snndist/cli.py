"""The ``snndist`` command line.

    snndist train --config configs/tutorial.yaml                      # on a local Ray instance
    snndist train --config configs/tutorial.yaml --local              # in this process
    snndist train --config configs/bench_shd.yaml --set train.workers=2 --set train.grad_sync=xla
    snndist train --config configs/tutorial.yaml --address auto       # join a running cluster
    snndist submit --address http://HEAD:8265 --config configs/tutorial.yaml

    snndist train --resume runs/tutorial-20261128-120000 --set train.steps=6000
    snndist sweep --config configs/tutorial.yaml --space configs/sweep_tutorial.yaml

Bad input (an unknown key, a wrong type, a value out of range, a missing
file) exits with code 2 and one line that names the field and the problem.
A run stopped by SIGTERM/SIGINT saves a checkpoint and exits with code 75.
"""
from __future__ import annotations

import argparse
import os
import sys
import typing

from snndist.config import Split
from snndist.errors import ConfigError, SnndistError

EXIT_BAD_INPUT = ConfigError.exit_code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, as for a bad config
        self.exit(EXIT_BAD_INPUT, f"snndist: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="snndist", description=(
        "Train spiking neural networks with surrogate-gradient BPTT in JAX, on a Ray cluster."))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_Parser)

    train = commands.add_parser("train", help="train a network from a config file", description=(
        "Train the network a config describes and write a run directory "
        "(config.yaml, metrics.jsonl, summary.json)."))
    train.add_argument("--config", metavar="FILE", help="YAML config, e.g. configs/tutorial.yaml")
    train.add_argument("--resume", metavar="RUN_DIR",
                       help="continue RUN_DIR from its newest readable checkpoint, with its config.yaml "
                            "(--set may change only fields that leave the math alone: train.steps, logging, ...)")
    train.add_argument("--restart", action="store_true",
                       help="with --resume: start RUN_DIR over at step 0 (earlier checkpoints are kept aside)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. train.steps=500 or model.layers[0].size=8 (repeatable)")
    train.add_argument("--run-dir", metavar="DIR", help="where to write the run (default: runs/<config>-<time>)")
    train.add_argument("--address", metavar="ADDR",
                       help="Ray cluster to join, as ray.init takes it: auto, HOST:6379, ray://HOST:10001 "
                            "(sets cluster.address; default: RAY_ADDRESS, else a local instance)")
    train.add_argument("--local", action="store_true",
                       help="train in this process, without Ray (default: Ray workers, train.workers of them, "
                            "on cluster.address, RAY_ADDRESS, or a local Ray instance started for the run)")
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser("eval", help="evaluate a run's newest checkpoint", description=(
        "Load RUN_DIR's newest checkpoint, print eval loss, accuracy and per-layer spike rates, "
        "and write them to RUN_DIR/eval_<split>.json."))
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--split", default="train", choices=typing.get_args(Split),
                          help="which split of the run's dataset (default: train)")
    evaluate.set_defaults(func=cmd_eval)

    plot = commands.add_parser("plot", help="draw a run's loss, spike raster and voltages", description=(
        "Write RUN_DIR/plots/loss.png (from metrics.jsonl), raster.png and voltage.png (from the newest "
        "checkpoint), the pictures W&B shows, without W&B."))
    plot.add_argument("run_dir", metavar="RUN_DIR")
    plot.set_defaults(func=cmd_plot)

    export = commands.add_parser("export", help="write a run's network as a NIR graph", description=(
        "Write the network of RUN_DIR's newest checkpoint (or --step N) as a NIR graph (the Neuromorphic "
        "Intermediate Representation) with nir.write; see README, 'NIR export and import'."))
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--to", required=True, metavar="FILE", help="the NIR file to write, e.g. model.nir")
    export.add_argument("--step", type=int, metavar="N", help="the checkpoint of step N (default: the newest)")
    export.add_argument("--for", dest="flavor", default="nir", choices=["nir", "snntorch"],
                        help="nir: time constants in seconds, exact decays (default); snntorch: what "
                             "snnTorch's importer reads as snndist computes (forward Euler at its 0.1 ms step)")
    export.set_defaults(func=cmd_export)

    imp = commands.add_parser("import", help="make a run directory from a NIR graph", description=(
        "Read a NIR graph (input, Affine + CubaLIF per layer, optional recurrent Affine, Affine + LI "
        "readout, output) into RUN_DIR: config.yaml and a step-0 checkpoint that eval and "
        "train --resume take. Name the dataset with --set data.*."))
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--to", required=True, metavar="RUN_DIR", help="a new run directory")
    imp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="config fields, e.g. data.kind=shd or train.lr=1e-3 (repeatable)")
    imp.add_argument("--from", dest="flavor", choices=["nir", "snntorch"],
                     help="how the graph's time constants read: nir (exact decays at data.dt_ms) or "
                          "snntorch (forward Euler at snnTorch's 0.1 ms step); default: the graph's "
                          "snndist metadata, else nir")
    imp.set_defaults(func=cmd_import)

    bench = commands.add_parser("bench", help="time a config's train step on this machine", description=(
        "Run a config's train step in this process on this machine's devices (CPU or GPU) and print the "
        "compile time, ms/step, samples/s, peak device memory and the dense-matmul FLOP floor, to size a "
        "cluster run before submitting it."))
    bench.add_argument("--config", required=True, metavar="FILE", help="YAML config, e.g. configs/bench_shd.yaml")
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. train.global_batch=512 (repeatable)")
    bench.add_argument("--steps", type=int, default=20, metavar="N", help="timed steps after the first (default 20)")
    bench.add_argument("--json", action="store_true",
                       help="print one JSON object (ms_per_step, samples_per_s, compile_s, peak_memory_bytes, "
                            "flop_floor_ms, device) and nothing else on stdout")
    bench.set_defaults(func=cmd_bench)

    sweep = commands.add_parser("sweep", help="search hyperparameters with Ray Tune", description=(
        "Train one run per point of a search space (a sweep file: config fields and their distributions, the "
        "metric to optimise, an optional ASHA scheduler that stops poor trials early) with Ray Tune, each "
        "trial in SWEEP_DIR/trials/<id> and in the W&B group of the sweep. At the end: a table of the trials "
        "by the metric, SWEEP_DIR/best.yaml (the best trial's config, for snndist train --config) and "
        "SWEEP_DIR/plots/sweep.png. See README, 'Sweeps'."))
    sweep.add_argument("--config", metavar="FILE", help="the base config every trial starts from")
    sweep.add_argument("--space", metavar="FILE", help="the sweep file, e.g. configs/sweep_tutorial.yaml")
    sweep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a field of the base config (repeatable)")
    sweep.add_argument("--run-dir", metavar="DIR", help="the sweep directory (default: runs/<sweep file>-<time>)")
    sweep.add_argument("--address", metavar="ADDR", help="Ray cluster to join, as for train (default: "
                                                         "RAY_ADDRESS, else a local instance; with --resume: "
                                                         "where the sweep ran)")
    sweep.add_argument("--resume", metavar="SWEEP_DIR",
                       help="continue a stopped sweep: ended trials stay, unfinished ones resume from their "
                            "newest checkpoints")
    sweep.add_argument("--status", metavar="SWEEP_DIR",
                       help="print the table of a sweep (running or ended), write its best.yaml and picture")
    sweep.set_defaults(func=cmd_sweep)

    from snndist.dist.job_commands import add_job_commands

    add_job_commands(commands)
    return parser


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from snndist.config import load_config
    from snndist.run.bench import bench, format_report

    if args.steps < 1:
        raise ConfigError(f"--steps {args.steps}: must be >= 1")
    cfg = load_config(args.config, args.set)
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    result = bench(cfg, args.steps, say)
    print(json.dumps(result) if args.json else format_report(result))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if not args.local:
        # The coordinator holds no device memory: JAX (which Orbax imports) stays on the host here, whatever
        # the shell says (JAX_PLATFORMS=cuda would take 75% of a GPU head's first GPU). Workers choose their
        # platform through their own environment (cluster.worker_env).
        os.environ["JAX_PLATFORMS"] = "cpu"
    from snndist.config import load_config
    from snndist.run.launch import resume_config, train
    from snndist.store.rundir import default_run_dir

    overrides = [*args.set, *([f"cluster.address={args.address}"] if args.address else [])]
    if args.resume:
        if args.config or args.run_dir:
            raise ConfigError("--resume takes the run's own config and directory; drop --config/--run-dir")
        run_dir = args.resume
        cfg = resume_config(run_dir, overrides)
    else:
        if not args.config:
            raise ConfigError("--config FILE is required (or --resume RUN_DIR)")
        if args.restart:
            raise ConfigError("--restart goes with --resume RUN_DIR")
        cfg = load_config(args.config, overrides)
        run_dir = args.run_dir or default_run_dir(args.config)
    print(f"run directory: {run_dir}", flush=True)
    train(cfg, run_dir, local=args.local, resume=bool(args.resume), restart=args.restart,
          say=lambda line: print(line, flush=True))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from snndist.sweep import launch

    given = [name for name in ("config", "space", "set", "run_dir") if getattr(args, name)]
    if args.resume or args.status:
        if args.resume and args.status:
            raise ConfigError("--resume and --status: one or the other")
        if given:
            raise ConfigError(f"--{given[0].replace('_', '-')}: a sweep's own files say it; drop it with "
                              f"--resume/--status")
        if args.status and args.address:
            raise ConfigError("--address: --status reads the sweep directory, it joins no cluster")
        if args.status:
            launch.status(Path(args.status))
            return 0
        os.environ["JAX_PLATFORMS"] = "cpu"  # as for train: the driver holds no device memory
        return launch.resume(Path(args.resume), args.address)
    if not args.config or not args.space:
        raise ConfigError("--config FILE and --space FILE are required (or --resume/--status SWEEP_DIR)")
    from snndist.config import load_config
    from snndist.store.rundir import default_run_dir

    os.environ["JAX_PLATFORMS"] = "cpu"
    base = load_config(args.config, [*args.set, *([f"cluster.address={args.address}"] if args.address else [])])
    return launch.sweep(base, args.space, args.run_dir or str(default_run_dir(args.space)))


def cmd_eval(args: argparse.Namespace) -> int:
    from snndist.run.report import evaluate_run

    metrics = evaluate_run(args.run_dir, args.split)
    for key, value in metrics.items():
        print(f"{key:<32} {value}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from snndist.run.report import plot_run

    for path in plot_run(args.run_dir):
        print(f"wrote {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from snndist.run.nir_run import export_run

    step = export_run(args.run_dir, args.to, step=args.step, flavor=args.flavor)
    print(f"wrote {args.to} (step {step})")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from snndist.run.nir_run import import_graph

    cfg = import_graph(args.file, args.to, args.set, flavor=args.flavor)
    sizes = " -> ".join(str(n) for n in [cfg.data.num_inputs, *(l.size for l in cfg.model.layers),
                                         cfg.data.num_classes])
    print(f"wrote {args.to}: {sizes} at dt {cfg.data.dt_ms:g} ms, step-0 checkpoint")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SnndistError as err:
        print(f"snndist: error: {err}", file=sys.stderr)
        return err.exit_code
