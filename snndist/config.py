"""Run configuration: one YAML file, typed and validated.

The file has the sections ``model``, ``data``, ``train``, ``checkpoint``,
``logging`` and ``cluster``; each is a frozen dataclass below, and every field
has a default, so a file only lists what differs. ``--set a.b=value``
overrides any field (``model.layers[0].size=8`` or ``model.layers.0.size=8``;
one past the end appends: ``model.layers[1]={size: 8}``); values are parsed
as YAML. Unknown keys and wrong types are errors
that name the dotted path, the value and the rule.

Times are in milliseconds, voltages and currents are plain numbers (the seed's
natural units: theta = 1, R = 1).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from etils import epath

from snndist.errors import ConfigError, one_line
from snndist.model.surrogate_params import SURROGATE_DEFAULTS

# Fields with a fixed set of values: the one place each set is declared.
# Loading checks them; the code that acts on them dispatches on these names.
Reset = Literal["soft", "hard"]
WeightInit = Literal["kaiming_normal", "kaiming_uniform"]
ReadoutReduce = Literal["mean", "max", "last"]
DataKind = Literal["synthetic", "shd", "ssc", "nmnist", "events", "tonic", "encoded"]
Encoding = Literal["auto", "events", "dense"]
BinCount = Literal["clip", "count"]
StaticEncoder = Literal["rate", "latency"]
Latency = Literal["linear", "log"]
Optimizer = Literal["adam", "adamw", "sgd"]
LrSchedule = Literal["constant", "cosine", "linear"]
GradSync = Literal["coordinator", "xla"]
Split = Literal["train", "valid", "test"]
BestMode = Literal["min", "max"]
Precision = Literal["f32", "bf16"]
Products = Literal["auto", "in_loop", "batched"]
SpikeProducts = Literal["auto", "f32", "int8"]
MatmulPrecision = Literal["highest", "high", "default"]
WandbMode = Literal["online", "offline", "disabled"]
WandbOnError = Literal["offline", "disable", "fail"]
Accelerator = Literal["auto", "cpu", "gpu", "tpu"]
PlacementStrategy = Literal["PACK", "SPREAD", "STRICT_SPREAD"]
TPU_CHIPS_PER_WORKER = (1, 2, 4, 8)  # what Ray grants a process of a TPU host


def resumable(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A field ``--resume --set`` may change: it leaves what a step computes alone (see ``config_hash``)."""
    return field(default=default, metadata={"resumable": True}, **kwargs)


def added(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A field added after runs were checkpointed: it enters ``config_hash`` only when set off its
    default, so that those runs' checkpoints still match their configs."""
    return field(default=default, metadata={"added": True}, **kwargs)


# --------------------------------------------------------------------- model
@dataclass(frozen=True)
class RateRegConfig:
    """Penalty on per-sample firing rates outside ``[low_hz, high_hz]``.

    Adds ``strength * mean_{b,n}(relu(low - r)^2 + relu(r - high)^2)`` to the
    loss, with ``r`` the rate (Hz) of neuron n on sample b.
    """

    strength: float = 0.0  # 0 turns it off
    low_hz: float = 0.0
    high_hz: float = math.inf


@dataclass(frozen=True)
class LayerConfig:
    """One hidden LIF layer with an exponential synapse (DESIGN.md section 1)."""

    size: int = 4
    recurrent: bool = False  # adds weights V fed by the layer's own spikes of the last step
    tau_mem_ms: float = 20.0
    tau_syn_ms: float = 10.0
    threshold: float = 1.0
    v_reset: float = 0.0
    v_rest: float = 0.0
    resistance: float = 1.0
    reset: Reset = "soft"  # soft: subtract (theta - v_reset); hard: set to v_reset
    init: WeightInit = "kaiming_normal"  # kaiming_normal is truncated, as the seed's
    init_scale: float = 2.0  # variance = init_scale / fan_in
    rec_init_scale: float = 1.0  # the same for V
    rate_reg: RateRegConfig = field(default_factory=RateRegConfig)


@dataclass(frozen=True)
class ReadoutConfig:
    """Leaky integrator ``o_t = a o_{t-1} + W s_t + b``; one unit per class."""

    tau_ms: float = 10.0
    reduce: str = "mean"  # over time, for loss and accuracy alike: mean | max | last
    init: str = "kaiming_normal"
    init_scale: float = 2.0


@dataclass(frozen=True)
class ModelConfig:
    layers: tuple[LayerConfig, ...] = (LayerConfig(),)
    readout: ReadoutConfig = field(default_factory=ReadoutConfig)
    surrogate: str = "relu"  # a family of snndist.model.surrogate_params
    surrogate_params: dict[str, float] = field(default_factory=dict)  # e.g. {alpha: 0.3}


# ---------------------------------------------------------------------- data
@dataclass(frozen=True)
class EncodeConfig:
    """How ``kind: encoded`` turns static features in [0, 1] into spikes (see ``snndist.data.encoded``)."""

    method: StaticEncoder = "rate"  # rate: Bernoulli per step; latency: one spike, earlier for larger x
    max_rate_hz: float = 200.0  # rate: the firing rate of a feature of 1
    latency: Latency = "linear"  # latency: spike step linear in x, or logarithmic
    threshold: float = 0.01  # latency: features at or below this do not fire


@dataclass(frozen=True)
class DataConfig:
    # synthetic: Bernoulli spike trains, random labels (the seed's task); shd, ssc, nmnist: the published
    # datasets; events: users' recordings; tonic: a tonic dataset; encoded: static data encoded as spikes
    kind: DataKind = "synthetic"
    path: Optional[str] = added(None)  # the dataset's directory (encoded: an .npz; none: scikit-learn digits)
    num_inputs: int = 100  # input channels, after data.channel_pool
    num_classes: int = 2
    timesteps: int = 200
    dt_ms: float = 1.0  # simulation step, and the width of a bin of recorded events
    channel_pool: int = added(1)  # recordings: channels (shd, ssc, events) or each pixel axis pooled by this
    bin_count: BinCount = added("clip")  # recordings: events of a channel in one bin: clip to 1 or count
    tonic_dataset: Optional[str] = added(None)  # tonic: a class of tonic.datasets, e.g. POKERDVS
    encode: EncodeConfig = added(default_factory=EncodeConfig)  # encoded: how
    test_fraction: float = added(0.2)  # encoded, without a test split of its own: held out of the data
    valid_fraction: float = added(0.0)  # held out of train as the valid split (datasets without one)
    rate_hz: float = 5.0  # synthetic: input firing rate
    num_samples: int = 256  # synthetic: samples per split
    seed: Optional[int] = None  # synthetic, encoded: which spikes (i depends on (seed, i) only); None: train.seed
    shuffle: bool = True  # a new sample order every epoch
    # events (sparse lists), dense (rasters), auto: events below a density that falls with the first layer's
    # size (data/loader.py's events_pay, measured); the same math either way
    encoding: Encoding = resumable("auto")
    max_events: int = 0  # events per sample for the events encoding; 0: derived from the data where it can be


# --------------------------------------------------------------------- train
@dataclass(frozen=True)
class TrainConfig:
    steps: int = resumable(3000)
    global_batch: int = 256  # samples per step, over all workers and devices
    optimizer: Optimizer = "adam"
    lr: float = 3e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.0  # sgd only
    weight_decay: float = 0.0  # adamw only
    grad_clip: float = 0.0  # global-norm clip; 0 turns it off
    lr_schedule: LrSchedule = "constant"  # cosine and linear decay to 0 at train.steps
    warmup_steps: int = 0  # linear warm-up from 0, before the schedule
    seed: int = 0  # parameter initialisation and sample order
    workers: int = resumable(1)  # Ray worker actors, each a replica over its devices
    # after losing workers' nodes, go on with as few as this (same global batch); null: train.workers
    min_workers: Optional[int] = resumable(None)
    grad_sync: GradSync = resumable("coordinator")  # coordinator: mean on the driver; xla: collectives in the step
    max_failures: int = resumable(3)  # worker deaths and step timeouts recovered from checkpoints before giving up
    max_bad_steps: int = resumable(10)  # non-finite steps in a row before the run stops
    debug_nan_steps: tuple[int, ...] = resumable(())  # fault injection for tests: these steps' gradients become NaN
    step_timeout_s: float = resumable(600.0)  # a step (the first one compiles) that takes longer is a lost worker
    drift_check_every: int = resumable(100)  # coordinator sync: compare replicas' parameters every N steps
    # Steps per call to the workers (or the local device), up to the next log, eval or checkpoint step:
    # fewer host round trips, but a stop signal waits for the call. 0: about 1 s of work per call.
    steps_per_call: int = resumable(0)
    eval_every: int = resumable(0)  # steps; 0: only at the end
    eval_split: Split = resumable("train")
    eval_batch: int = resumable(256)
    # The matrix products' inputs: f32, or bf16 with f32 accumulation (for accelerators; the state and the
    # elementwise math stay f32).
    precision: Precision = added("f32")
    # f32 products on accelerators: highest is true f32 (a GPU reproduces the CPU to 1e-5); default lets JAX
    # use TF32 on NVIDIA GPUs and bf16 passes on TPUs (faster; spikes flip, gradients move by up to ~3%); high:
    # between. No effect on CPUs. The step's math changes on accelerators, so a resume may not change it.
    matmul_precision: MatmulPrecision = added("highest")
    # GPU workers: XLA's deterministic algorithms (--xla_gpu_deterministic_ops) in place of atomics for
    # scatter-adds and reductions, so that two runs on the same GPUs give the same bits (slower). CPUs are
    # deterministic already. Set in the Ray workers' environment before they start JAX.
    deterministic_ops: bool = resumable(False)
    # Walk through time in chunks of this many steps, each recomputed in the backward pass: memory grows
    # with T / remat + remat instead of T, for about one more forward pass (0: off). The same math; the
    # sums over time are added chunk by chunk, so results may differ in the last bits, and a resume may
    # turn it on (a longer T, a smaller device) or off.
    remat: int = resumable(0)
    # The layers' products that need no recurrence (input drive, weight and input gradients): in_loop, step
    # by step inside the time loop (fast on CPUs, whose caches hold one step), or batched, one product over
    # all steps outside it (fast on accelerators); auto: in_loop on CPU, else batched. The same math.
    products: Products = resumable("auto")
    unroll: Optional[int] = resumable(None)  # time steps per iteration of the time loops; null: by platform
    # The forward pass's products with a side of spikes (the recurrent spikes; in_loop, also bool input): f32,
    # or int8: int8 products of the weights' 3 digits of a fixed point per column. The values agree to about
    # f32's rounding (2^-24 of the column's largest weight); auto: int8 on CPUs with AMX int8 tiles, where it is
    # faster (BENCHMARKS.md), else f32.
    spike_products: SpikeProducts = resumable("auto")


# ------------------------------------------------------------ checkpoint, logging, cluster
@dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 500  # and always at the end, and on SIGTERM/SIGINT
    keep: int = 3  # the latest N
    keep_best: int = 0  # and the best N by best_metric (0: off)
    best_metric: str = "eval/loss"
    best_mode: BestMode = "min"
    lease_timeout_s: float = 60.0  # a run directory whose owner's heartbeat is older than this is taken over


@dataclass(frozen=True)
class WandbConfig:
    """W&B settings. Each one set here wins; unset (null, or no tags), W&B's own environment variable
    (WANDB_MODE, WANDB_PROJECT, WANDB_ENTITY, WANDB_RUN_GROUP, WANDB_TAGS, WANDB_NAME) gives it; else the
    default said beside it."""

    mode: Optional[WandbMode] = None  # default: online with WANDB_API_KEY set, else offline
    project: Optional[str] = None  # default: snndist
    entity: Optional[str] = None  # default: the key's own
    group: Optional[str] = None
    tags: tuple[str, ...] = ()
    name: Optional[str] = None  # default: the run directory's name
    on_error: WandbOnError = "offline"  # W&B cannot start online, or fails mid-run: go on offline, without it, or stop
    images_every: int = 500  # pictures at the first logged step at or after each multiple of this; 0: off
    system_stats: bool = False  # W&B's CPU/GPU/memory sampling: a few % of a small CPU run's time


@dataclass(frozen=True)
class LoggingConfig:
    log_every: int = 100  # steps between metrics.jsonl lines (and progress lines)
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass(frozen=True)
class ClusterConfig:
    address: Optional[str] = None  # None: RAY_ADDRESS, else a local Ray instance (what ray.init takes)
    accelerator: Accelerator = "auto"  # auto: gpu or tpu if the cluster has them
    cpus_per_worker: int = 1
    pin_cpus: bool = False  # CPU workers: confine each to cpus_per_worker cores (XLA uses every core it sees)
    devices_per_worker: int = 1  # GPUs or TPU chips; on CPU, host devices XLA exposes per worker
    # TPU workers: the slice to reserve whole, as Ray names its type (v4-16, v5p-32, v6e-16, ...): one worker a
    # host with all its chips (train.workers = the slice's hosts, devices_per_worker = chips per host), rank i on
    # TPU worker i. null: TPU chips wherever Ray has them (a single-host slice).
    tpu_pod_type: Optional[str] = None
    # null: STRICT_SPREAD when the workers get GPUs (one worker a node, holding cluster.devices_per_worker of
    # its GPUs: NCCL is slow or hangs between processes that each see one GPU of a node), else PACK
    placement_strategy: Optional[PlacementStrategy] = None
    # how long to wait for the workers' resources; None: no limit on a cluster (--address, RAY_ADDRESS, a Ray
    # job: capacity frees and nodes join), 60 s on the embedded local instance
    resource_timeout_s: Optional[float] = None
    # grad_sync xla: the port of the jax.distributed coordinator, on worker 0's node (a firewall's hole); null: a
    # free one. Taken when the group starts: the group starts again on a free one.
    coordinator_port: Optional[int] = None
    # merged into the workers' environment: NCCL_*, XLA_FLAGS, LIBTPU_INIT_ARGS, ... (never the W&B key: only
    # the coordinator talks to W&B)
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = resumable(default_factory=CheckpointConfig)
    logging: LoggingConfig = resumable(default_factory=LoggingConfig)
    cluster: ClusterConfig = resumable(default_factory=ClusterConfig)

    def validate(self) -> "Config":
        """Range checks across fields; raises ConfigError naming the first bad one."""
        _validate(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)


# ------------------------------------------------------------------ loading
def local_root() -> Path:
    """Where snndist keeps files on this machine: ``$SNNDIST_LOCAL_DIR``, default ``~/.cache/snndist``."""
    return Path(os.environ.get("SNNDIST_LOCAL_DIR", "~/.cache/snndist")).expanduser()


def read_yaml(path: epath.Path | Path, kind: str) -> Any:
    """The YAML document at ``path`` (empty: {}); ConfigError names the file if it is missing or malformed."""
    if not path.is_file():
        raise ConfigError(f"{path}: {kind} not found")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({one_line(err)})") from None


def load_config(path: str | Path | None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read ``path`` (None: all defaults), apply ``--set`` overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = epath.Path(path)  # a run's config.yaml may be at gs://
        raw = read_yaml(path, "config file")
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: must hold a mapping of sections, got {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item)
    return from_dict(raw).validate()


def from_dict(raw: dict[str, Any]) -> Config:
    return _build(Config, raw, "")


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``a.b[0].c=value`` override to the raw (pre-typing) mapping."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.steps=500")
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*|\.\d+|\[\d+\])*", key):
        raise ConfigError(f"--set {item!r}: malformed key {key!r}")
    parts = re.findall(r"[A-Za-z_]\w*|\d+", key)
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        node = _descend(node, part, parts[i + 1], item)
    last = parts[-1]
    if isinstance(node, list):
        index = int(last) if last.isdigit() else -1
        if not 0 <= index <= len(node):
            raise ConfigError(f"--set {item!r}: index {last} is out of range (list has {len(node)})")
        if index == len(node):  # model.layers[N]={...} appends a layer
            node.append(value)
        else:
            node[index] = value
    else:
        node[last] = value


def _descend(node: Any, part: str, next_part: str, item: str) -> Any:
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            raise ConfigError(f"--set {item!r}: index {part} is out of range (list has {len(node)})")
        return node[int(part)]
    if part.isdigit():
        raise ConfigError(f"--set {item!r}: {part!r} indexes something that is not a list")
    if part not in node or node[part] is None:
        # Lists (model.layers) default to the dataclass's; materialise them so an index works.
        node[part] = _default_raw(part) if next_part.isdigit() else {}
    return node[part]


def _default_raw(name: str) -> Any:
    if name == "layers":
        return [_to_plain(layer) for layer in ModelConfig().layers]
    return []


def _build(cls: type, raw: Any, path: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'config'}={raw!r}: must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(names))})")
    values = {name: _convert(hints[name], raw[name], f"{path}.{name}" if path else name) for name in raw}
    return cls(**values)


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        _check(value in choices, path, value, f"must be one of {', '.join(choices)}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(args[0], value, path)
    if dataclasses.is_dataclass(tp):
        return _build(tp, {} if value is None else value, path)
    if origin is tuple:
        item_tp = typing.get_args(tp)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}={value!r}: must be a list")
        return tuple(_convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}={value!r}: must be a mapping")
        val_tp = typing.get_args(tp)[1]
        return {str(k): _convert(val_tp, v, f"{path}.{k}") for k, v in value.items()}
    return _scalar(tp, value, path)


def _scalar(tp: type, value: Any, path: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}={value!r}: must be true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}={value!r}: must be an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e-3 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}={value!r}: must be a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}={value!r}: must be a string")
    raise TypeError(f"config field {path} has unsupported type {tp}")


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj


def dump_yaml(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


# ------------------------------------------------------------------ resume
def _math(obj: Any) -> Any:
    """The plain form of a config without its resumable fields (and added fields at their default):
    what a step computes from."""
    if dataclasses.is_dataclass(obj):
        return {f.name: _math(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not f.metadata.get("resumable") and not (f.metadata.get("added") and _is_default(obj, f))}
    return _to_plain(obj)


def _is_default(obj: Any, f: dataclasses.Field) -> bool:
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return getattr(obj, f.name) == default


def config_hash(cfg: Config) -> str:
    """Hash of everything that changes the math (what a resume may not change); stored in checkpoints."""
    return hashlib.sha256(json.dumps(_math(cfg), sort_keys=True).encode()).hexdigest()[:16]


def resumable_fields(cls: type | None = None, prefix: str = "") -> list[str]:
    """Dotted names of the fields (``section.*`` for whole sections) that a resume may change."""
    cls = cls or Config
    names = []
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        if f.metadata.get("resumable"):
            names.append(f"{path}.*" if _is_section(f) else path)
        elif _is_section(f):
            names += resumable_fields(f.default_factory, f"{path}.")
    return names


def _is_section(f: dataclasses.Field) -> bool:
    return f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory)


# --------------------------------------------------------------- validation
def _divisor_near_sqrt(n: int) -> int:
    """The divisor of ``n`` closest to its square root: the chunk length that needs the least memory."""
    return min((k for k in range(1, n + 1) if n % k == 0), key=lambda k: abs(k - math.sqrt(n)))


def _check(ok: bool, path: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{path}={value!r}: {rule}")


def _validate(cfg: Config) -> None:
    d, m, t = cfg.data, cfg.model, cfg.train
    _check(d.dt_ms > 0, "data.dt_ms", d.dt_ms, "must be > 0")
    for name in ("num_inputs", "num_classes", "timesteps", "num_samples"):
        _check(getattr(d, name) > 0, f"data.{name}", getattr(d, name), "must be > 0")
    _check(d.num_classes >= 2, "data.num_classes", d.num_classes, "must be >= 2")
    _check(d.max_events >= 0, "data.max_events", d.max_events, "must be >= 0 (0: derived from the data)")
    if d.kind == "synthetic":
        _check(0 <= d.rate_hz * d.dt_ms / 1000.0 <= 1, "data.rate_hz", d.rate_hz,
               f"must be in [0, 1000/dt_ms] = [0, {1000.0 / d.dt_ms:g}]")
    if d.kind in ("shd", "ssc", "nmnist", "events", "tonic"):
        _check(d.path is not None, "data.path", d.path, f"data.kind={d.kind} reads its files from data.path")
    _check(d.kind != "tonic" or d.tonic_dataset is not None, "data.tonic_dataset", d.tonic_dataset,
           "data.kind=tonic needs a class of tonic.datasets, e.g. POKERDVS")
    _check(d.channel_pool > 0, "data.channel_pool", d.channel_pool, "must be > 0")
    _check(0 <= d.valid_fraction < 1, "data.valid_fraction", d.valid_fraction, "must be in [0, 1)")
    _check(d.kind != "ssc" or d.valid_fraction == 0, "data.valid_fraction", d.valid_fraction,
           "must be 0 for ssc, which has a valid split of its own")
    _check(0 < d.test_fraction < 1, "data.test_fraction", d.test_fraction, "must be in (0, 1)")
    if d.kind == "encoded":
        e = d.encode
        _check(0 < e.max_rate_hz * d.dt_ms / 1000.0 <= 1, "data.encode.max_rate_hz", e.max_rate_hz,
               f"must be in (0, 1000/dt_ms] = (0, {1000.0 / d.dt_ms:g}]")
        _check(0 < e.threshold < 1, "data.encode.threshold", e.threshold, "must be in (0, 1)")

    _check(len(m.layers) > 0, "model.layers", [], "must list at least one hidden layer")
    for i, layer in enumerate(m.layers):
        p = f"model.layers[{i}]"
        _check(layer.size > 0, f"{p}.size", layer.size, "must be > 0")
        for name in ("tau_mem_ms", "tau_syn_ms"):
            tau = getattr(layer, name)
            _check(tau > 0, f"{p}.{name}", tau, "must be > 0")
            _check(d.dt_ms < tau, f"{p}.{name}", tau, f"must be > data.dt_ms={d.dt_ms:g}")
        _check(layer.threshold > layer.v_reset, f"{p}.threshold", layer.threshold,
               f"must be > {p}.v_reset={layer.v_reset:g}")
        _check(layer.resistance > 0, f"{p}.resistance", layer.resistance, "must be > 0")
        _check(layer.init_scale > 0, f"{p}.init_scale", layer.init_scale, "must be > 0")
        _check(layer.rec_init_scale > 0, f"{p}.rec_init_scale", layer.rec_init_scale, "must be > 0")
        reg = layer.rate_reg
        _check(reg.strength >= 0, f"{p}.rate_reg.strength", reg.strength, "must be >= 0")
        _check(0 <= reg.low_hz <= reg.high_hz, f"{p}.rate_reg.low_hz", reg.low_hz,
               f"must be in [0, rate_reg.high_hz={reg.high_hz:g}]")
    r = m.readout
    _check(r.tau_ms > 0, "model.readout.tau_ms", r.tau_ms, "must be > 0")
    _check(d.dt_ms < r.tau_ms, "model.readout.tau_ms", r.tau_ms, f"must be > data.dt_ms={d.dt_ms:g}")
    _check(r.init_scale > 0, "model.readout.init_scale", r.init_scale, "must be > 0")
    _check(m.surrogate in SURROGATE_DEFAULTS, "model.surrogate", m.surrogate,
           f"must be one of {', '.join(SURROGATE_DEFAULTS)}")
    known = SURROGATE_DEFAULTS[m.surrogate]
    for key, value in m.surrogate_params.items():
        _check(key in known, f"model.surrogate_params.{key}", value,
               f"not a parameter of surrogate {m.surrogate!r} (it takes: {', '.join(known)})")
        _check(value > 0, f"model.surrogate_params.{key}", value, "must be > 0")

    for name in ("steps", "global_batch", "workers", "eval_batch"):
        _check(getattr(t, name) > 0, f"train.{name}", getattr(t, name), "must be > 0")
    _check(t.min_workers is None or 0 < t.min_workers <= t.workers, "train.min_workers", t.min_workers,
           f"must be in [1, train.workers={t.workers}] (null: train.workers)")
    _check(t.lr > 0, "train.lr", t.lr, "must be > 0")
    for name in ("b1", "b2", "momentum"):
        _check(0 <= getattr(t, name) < 1, f"train.{name}", getattr(t, name), "must be in [0, 1)")
    _check(t.eps > 0, "train.eps", t.eps, "must be > 0")
    _check(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, "must be >= 0")
    _check(t.grad_clip >= 0, "train.grad_clip", t.grad_clip, "must be >= 0 (0: off)")
    _check(0 <= t.warmup_steps < t.steps, "train.warmup_steps", t.warmup_steps,
           f"must be in [0, train.steps={t.steps})")
    _check(t.eval_every >= 0, "train.eval_every", t.eval_every, "must be >= 0 (0: only at the end)")
    _check(t.unroll is None or t.unroll >= 1, "train.unroll", t.unroll, "must be >= 1 (or null: by platform)")
    _check(t.remat >= 0 and (t.remat == 0 or d.timesteps % t.remat == 0), "train.remat", t.remat,
           f"must be 0 (off) or divide data.timesteps={d.timesteps}, e.g. {_divisor_near_sqrt(d.timesteps)}")

    for key in cfg.cluster.env:
        _check(key != "WANDB_API_KEY", f"cluster.env.{key}", "...",
               "the W&B key is never sent to workers (only the coordinator talks to W&B)")
        _check(key != "JAX_PLATFORMS", f"cluster.env.{key}", cfg.cluster.env[key],
               "set by cluster.accelerator, not here")
    _check(cfg.checkpoint.every_steps > 0, "checkpoint.every_steps", cfg.checkpoint.every_steps, "must be > 0")
    _check(cfg.checkpoint.keep > 0, "checkpoint.keep", cfg.checkpoint.keep, "must be > 0")
    _check(cfg.checkpoint.keep_best >= 0, "checkpoint.keep_best", cfg.checkpoint.keep_best, "must be >= 0")
    _check(cfg.checkpoint.lease_timeout_s > 0, "checkpoint.lease_timeout_s", cfg.checkpoint.lease_timeout_s,
           "must be > 0")
    _check(t.max_failures >= 0, "train.max_failures", t.max_failures, "must be >= 0")
    _check(t.max_bad_steps > 0, "train.max_bad_steps", t.max_bad_steps, "must be > 0")
    _check(cfg.logging.log_every > 0, "logging.log_every", cfg.logging.log_every, "must be > 0")
    w = cfg.logging.wandb
    _check(w.images_every >= 0, "logging.wandb.images_every", w.images_every, "must be >= 0 (0: off)")
    c = cfg.cluster
    _check(c.cpus_per_worker > 0, "cluster.cpus_per_worker", c.cpus_per_worker, "must be > 0")
    _check(c.devices_per_worker > 0, "cluster.devices_per_worker", c.devices_per_worker, "must be > 0")
    _check(c.accelerator != "tpu" or c.devices_per_worker in TPU_CHIPS_PER_WORKER, "cluster.devices_per_worker",
           c.devices_per_worker, "a TPU worker takes 1, 2, 4 or 8 chips of its host (what Ray grants)")
    _check(c.tpu_pod_type is None or re.fullmatch(r"v\d+[a-z]*-\d+", c.tpu_pod_type), "cluster.tpu_pod_type",
           c.tpu_pod_type, "must be a TPU type as Ray names it, e.g. v4-16 or v6e-8")
    _check(c.resource_timeout_s is None or c.resource_timeout_s > 0, "cluster.resource_timeout_s",
           c.resource_timeout_s, "must be > 0 (or null: no limit on a cluster)")
    _check(c.coordinator_port is None or 0 < c.coordinator_port < 65536, "cluster.coordinator_port",
           c.coordinator_port, "must be a port number, 1 to 65535 (or null: a free one)")
    _check(t.step_timeout_s > 0, "train.step_timeout_s", t.step_timeout_s, "must be > 0")
    _check(t.steps_per_call >= 0, "train.steps_per_call", t.steps_per_call, "must be >= 0 (0: about 1 s of work)")
    _check(t.drift_check_every > 0, "train.drift_check_every", t.drift_check_every, "must be > 0")

