"""``snndist export`` and ``snndist import``: a run's checkpoint to a NIR file, a NIR file to a new run
directory that ``eval`` and ``train --resume`` take as they take any run (see nir_graph.py for the math)."""
from __future__ import annotations

import json
import os

import numpy as np

from snndist.config import Config, apply_override, config_hash, dump_yaml, from_dict, load_config
from snndist.errors import ConfigError
from snndist.run.nir_graph import FLAVORS, SNNTORCH_STEP_S, Timing, from_graph, nir_module, read_graph, to_graph
from snndist.store.checkpoint import Checkpointer
from snndist.store.rundir import check_run_dir_free, open_run_dir


def export_run(run_dir: str | os.PathLike, to: str | os.PathLike, step: int | None = None,
               flavor: str = "nir") -> int:
    """Write the network of ``run_dir``'s checkpoint (newest, or ``step``) to ``to`` with ``nir.write``;
    returns the step exported."""
    nir = nir_module()
    run_dir = open_run_dir(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.yaml)")
    cfg = load_config(run_dir / "config.yaml")
    checkpointer = Checkpointer(run_dir, cfg.checkpoint, say=print)
    try:
        step, params = checkpointer.restore_params(step)
    finally:
        checkpointer.close()
    nir.write(os.fspath(to), to_graph(params, cfg, flavor))
    return step


def import_graph(path: str | os.PathLike, run_dir: str | os.PathLike, overrides: list[str] = (),
                 flavor: str | None = None) -> Config:
    """Write ``run_dir``: the config of the graph at ``path`` (with ``overrides``, e.g. ``data.*``) and a
    step-0 checkpoint of its parameters, as a run that ``eval`` and ``train --resume`` take."""
    import jax

    from snndist.train.optim import make_optimizer
    from snndist.train.step import to_host

    run_dir = check_run_dir_free(open_run_dir(run_dir))
    graph = read_graph(path)
    meta = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (graph.metadata or {}).items()}
    flavor = flavor or meta.get("snndist.flavor", "nir")
    if flavor not in FLAVORS:
        raise ConfigError(f"--from {flavor}: must be one of {', '.join(FLAVORS)}")
    raw: dict = {}
    for item in overrides:
        apply_override(raw, item)
    given_dt = raw.get("data", {}).get("dt_ms")
    if "snndist.dt_ms" in meta:  # our own export: its run's dt and step
        dt_ms = float(given_dt or meta["snndist.dt_ms"])
        timing = Timing(float(meta["snndist.step_s"]), meta.get("snndist.discretization") == "euler")
    elif flavor == "snntorch":  # snnTorch's export: forward Euler at its fixed step
        dt_ms = float(given_dt or SNNTORCH_STEP_S * 1000.0)
        timing = Timing(SNNTORCH_STEP_S, True)
    else:
        dt_ms = float(given_dt or 1.0)
        timing = Timing(dt_ms / 1000.0, False)
    params, sections = from_graph(graph, timing, dt_ms)
    data = raw.setdefault("data", {})
    for key, value in {**sections["data"], "dt_ms": dt_ms}.items():
        if key in data and data[key] != value:
            raise ConfigError(f"--set data.{key}={data[key]}: the graph has {value}")
        data[key] = value
    if "snndist.timesteps" in meta:
        data.setdefault("timesteps", int(meta["snndist.timesteps"]))
    model = raw.setdefault("model", {})
    saved = json.loads(meta["snndist.model_config"]) if "snndist.model_config" in meta else {}
    if len(saved.get("layers", [])) == len(sections["model"]["layers"]):
        sections["model"]["layers"] = [{**old, **new} for old, new in zip(saved["layers"], sections["model"]["layers"])]
        sections["model"]["readout"] = {**saved["readout"], **sections["model"]["readout"]}
        sections["model"]["surrogate_params"] = saved.get("surrogate_params", {})
    for key, value in sections["model"].items():
        model.setdefault(key, value)
    cfg = from_dict(raw).validate()
    params = {k: {n: np.asarray(v, np.float32) for n, v in p.items()} for k, p in params.items()}
    opt_state = to_host(make_optimizer(cfg.train)[0].init(jax.tree.map(np.asarray, params)))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_yaml(cfg))
    checkpointer = Checkpointer(run_dir, cfg.checkpoint, say=print)
    try:
        checkpointer.save(0, {"params": params, "opt_state": opt_state}, {
            "wandb_run_id": None, "step": 0, "skipped": 0, "config_hash": config_hash(cfg),
            "data_position": {"epoch": 0, "offset": 0},
            "topology": {"workers": 0, "devices_per_worker": 0, "grad_sync": "imported"},
            "seeds": {"train": cfg.train.seed, "data": cfg.data.seed}})
    finally:
        checkpointer.close()
    return cfg
