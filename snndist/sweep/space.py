"""A sweep file: which config fields to search over and how, what to optimise, when to stop trials early.

Plain data and validation; no Ray here (``tuner`` turns a ``Sweep`` into Ray Tune's objects). Every
point of the space that can be checked up front (both ends of a range, every listed value) is applied
to the base config and validated as ``--set`` would be, so that a bad field or value stops the sweep
before any trial starts.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snndist.config import Config, apply_override, from_dict, read_yaml
from snndist.errors import ConfigError

DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "randint")
NUMERIC = ("uniform", "loguniform", "randint")  # draw numbers from a range [low, high)
SCHEDULERS = ("asha",)
METRIC_PREFIXES = ("eval/", "train/")


@dataclass(frozen=True)
class Asha:
    """Asynchronous successive halving over training steps: at each rung (``grace_period`` x
    ``reduction_factor``^k steps) only the best 1/``reduction_factor`` of trials go on."""

    grace_period: int
    max_t: int
    reduction_factor: float = 2.0


@dataclass(frozen=True)
class Sweep:
    space: dict[str, tuple[str, list]]  # config field -> (distribution, its arguments)
    metric: str
    mode: str  # max | min
    num_samples: int = 1
    max_concurrent_trials: int = 0  # 0: as many as the cluster holds
    seed: int = 0  # the search's random draws
    name: str | None = None  # the W&B group; default: the sweep directory's name
    sets: tuple[str, ...] = ()  # KEY=VALUE overrides of the base config, for every trial
    scheduler: Asha | None = None
    raw: dict = field(default_factory=dict, compare=False)  # the file as read, kept in the sweep directory


def read_sweep(path: str | Path, base: Config) -> Sweep:
    """The sweep file at ``path`` over the ``base`` config, validated; ConfigError names the first bad field."""
    path = Path(path)
    raw = read_yaml(path, "sweep file")
    try:
        return parse_sweep(raw, base)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def parse_sweep(raw: Any, base: Config) -> Sweep:
    if not isinstance(raw, dict):
        raise ConfigError(f"must hold a mapping, got {type(raw).__name__}")
    known = ("space", "metric", "mode", "num_samples", "max_concurrent_trials", "seed", "name", "set", "scheduler")
    for key in raw:
        if key not in known:
            raise ConfigError(f"{key}: unknown key (known: {', '.join(sorted(known))})")
    sets = tuple(_list(raw.get("set", []), "set", str))
    trial_base = with_overrides(base, sets, "set")
    metric = raw.get("metric")
    if not isinstance(metric, str) or not metric.startswith(METRIC_PREFIXES):
        raise ConfigError(f"metric={metric!r}: must name a metric snndist logs, e.g. eval/accuracy or train/loss")
    mode = raw.get("mode")
    if mode not in ("max", "min"):
        raise ConfigError(f"mode={mode!r}: must be max or min")
    num_samples = _int(raw, "num_samples", 1, least=1)
    max_concurrent = _int(raw, "max_concurrent_trials", 0, least=0)
    seed = _int(raw, "seed", 0, least=0)
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigError(f"name={name!r}: must be a non-empty string")
    space = _space(raw.get("space"), trial_base)
    scheduler = _scheduler(raw.get("scheduler"), trial_base, metric)
    return Sweep(space, metric, mode, num_samples, max_concurrent, seed, name, sets, scheduler, raw)


def _space(raw: Any, base: Config) -> dict[str, tuple[str, list]]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("space: must map config fields to search spaces, e.g. train.lr: {loguniform: [1e-4, 1e-2]}")
    space = {}
    plain = base.to_dict()
    for key, spec in raw.items():
        where = f"space.{key}"
        if not isinstance(spec, dict) or len(spec) != 1:
            raise ConfigError(f"{where}: must be one of {{{': ..., '.join(DISTRIBUTIONS)}: ...}}, got {spec!r}")
        (kind, args), = spec.items()
        if kind not in DISTRIBUTIONS:
            raise ConfigError(f"{where}: unknown distribution {kind!r} (known: {', '.join(DISTRIBUTIONS)})")
        args = _arguments(kind, args, where)
        if kind in NUMERIC:
            current = _field_value(plain, key)
            if isinstance(current, (str, bool, list, dict)):
                raise ConfigError(f"{where}: {kind} draws numbers, but {key} holds "
                                  f"{type(current).__name__} values ({current!r})")
        for value in points_to_check(kind, args):
            with_overrides(base, [override(key, value)], where)
        space[key] = (kind, args)
    return space


def _arguments(kind: str, args: Any, where: str) -> list:
    if kind in ("grid", "choice"):
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}: {kind} takes a non-empty list of values")
        return args
    if (not isinstance(args, list) or len(args) != 2
            or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)):
        raise ConfigError(f"{where}: {kind} takes [low, high], two numbers, got {args!r}")
    low, high = args
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"{where}: {kind} [low, high] needs low < high, got {args!r}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: loguniform needs low > 0, got {low!r}")
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise ConfigError(f"{where}: randint takes two integers [low, high) , got {args!r}")
    return [low, high]


def points_to_check(kind: str, args: list) -> list:
    """The values of a search space that validation can try: every listed one, both ends of a range."""
    if kind in ("grid", "choice"):
        return list(args)
    if kind == "randint":
        return [args[0], args[1] - 1]
    return [float(args[0]), float(args[1])]


def _field_value(plain: dict, key: str) -> Any:
    """The base config's value at dotted ``key`` (``a.b[0].c``), or None where it does not exist yet."""
    node: Any = plain
    for part in key.replace("[", ".").replace("]", "").split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def override(key: str, value: Any) -> str:
    """``KEY=VALUE`` as ``--set`` takes it, the value exactly (JSON is YAML; floats round-trip)."""
    return f"{key}={json.dumps(value)}"


def with_overrides(base: Config, overrides, where: str) -> Config:
    """``base`` with ``overrides`` applied and validated; ConfigError prefixed with ``where``."""
    raw = base.to_dict()
    try:
        for item in overrides:
            apply_override(raw, item)
        return from_dict(raw).validate()
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def _scheduler(raw: Any, base: Config, metric: str) -> Asha | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"scheduler={raw!r}: must be a mapping, e.g. {{kind: asha, grace_period: 100}}")
    kind = raw.get("kind")
    if kind not in SCHEDULERS:
        raise ConfigError(f"scheduler.kind={kind!r}: must be one of {', '.join(SCHEDULERS)}")
    for key in raw:
        if key not in ("kind", "grace_period", "max_t", "reduction_factor"):
            raise ConfigError(f"scheduler.{key}: unknown key (known: grace_period, kind, max_t, reduction_factor)")
    steps = base.train.steps
    grace = _int(raw, "grace_period", 1, least=1, prefix="scheduler.")
    max_t = _int(raw, "max_t", steps, least=grace, prefix="scheduler.")
    factor = raw.get("reduction_factor", 2)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 1:
        raise ConfigError(f"scheduler.reduction_factor={factor!r}: must be a number > 1")
    if grace > steps:
        raise ConfigError(f"scheduler.grace_period={grace}: must be <= train.steps={steps}")
    if metric.startswith("eval/") and not base.train.eval_every:
        raise ConfigError(f"scheduler: {metric} is measured only at the end with train.eval_every=0; set "
                          "train.eval_every (under set:) so that trials report it along the way")
    return Asha(grace, max_t, float(factor))


def _int(raw: dict, key: str, default: int, least: int, prefix: str = "") -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{prefix}{key}={value!r}: must be an integer")
    if value < least:
        raise ConfigError(f"{prefix}{key}={value!r}: must be >= {least}")
    return value


def _list(value: Any, where: str, of: type) -> list:
    if not isinstance(value, list) or not all(isinstance(v, of) for v in value):
        raise ConfigError(f"{where}={value!r}: must be a list of {of.__name__}s, e.g. [train.steps=300]")
    return value
